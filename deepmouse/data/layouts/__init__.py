"""On-disk layouts of the recordings deepmouse reads: one module per layout, each a reader and a writer."""
