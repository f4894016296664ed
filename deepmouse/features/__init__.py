"""Activation statistics: hooks and layers (:mod:`.layers`), streaming per-layer
statistics (:mod:`.stats`), the content-keyed cache (:mod:`.cache`) and the
per-model stage (:mod:`.extract`)."""
