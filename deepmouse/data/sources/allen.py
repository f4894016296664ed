"""``data.source: allen``: the real pull from the Allen Brain Observatory through the AllenSDK.

The download itself (resumable, retried, checksummed, atomic) is
:func:`deepmouse.data.allen.pull_allen`, which builds its folder aside itself after
checking that its cache does not lie inside it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from deepmouse.data.sources.base import Progress, describe_files
from deepmouse.data.sources.base import Source
from deepmouse.data.sources.ophys_nwb import OphysNwbReader


class AllenSource(Source):
    """Ophys experiments with natural scenes (session B), filtered by ``data.allen``."""

    reader = OphysNwbReader
    name = "allen"

    def describe(self, params) -> dict:
        from deepmouse.data.allen import cached_files

        cfg = params.data.allen
        # retries and timeout_s change how files are fetched, not which: they rerun nothing;
        # neuropixels names another release, which this source does not pull.
        return {"allen": {key: value for key, value in dataclasses.asdict(cfg).items()
                          if key not in ("retries", "timeout_s", "neuropixels")},
                "files": describe_files(cached_files(cfg), Path(cfg.cache_dir))}

    def pull(self, params, out_dir: Path, progress: Progress) -> dict:
        from deepmouse.data.allen import pull_allen

        return pull_allen(params.data.allen, out_dir, progress=progress)
