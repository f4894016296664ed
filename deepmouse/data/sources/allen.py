"""``data.source: allen``: the real pull from the Allen Brain Observatory through the AllenSDK.

The download itself (resumable, retried, checksummed, atomic) is
:func:`deepmouse.data.allen.pull_allen`, which builds its folder aside itself after
checking that its cache does not lie inside it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from deepmouse.atomic import atomic_dir
from deepmouse.data.sources.base import Progress, describe_files, pull_summary_with_neuropixels
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
        described = {"allen": {key: value for key, value in dataclasses.asdict(cfg).items()
                               if key not in ("retries", "timeout_s", "neuropixels")},
                     "files": describe_files(cached_files(cfg), Path(cfg.cache_dir)),
                     "modalities": list(params.data.modalities)}
        if "neuropixels" in params.data.modalities:
            from deepmouse.data.neuropixels import cached_session_files

            # The Neuropixels release is pulled when data.modalities lists it (enabled is not needed then).
            pixels = cfg.neuropixels
            described["neuropixels"] = {
                "cache_dir": pixels.cache_dir, "areas": pixels.areas, "max_sessions": pixels.max_sessions,
                "files": describe_files(cached_session_files(pixels), Path(pixels.cache_dir))}
        return described

    def pull(self, params, out_dir: Path, progress: Progress) -> dict:
        from deepmouse.data.allen import pull_allen
        from deepmouse.data.sources.neuropixels_pull import add_to_manifest, pull_allen_neuropixels, wants_neuropixels

        if not wants_neuropixels(params):
            return pull_allen(params.data.allen, out_dir, progress=progress)
        # Both recordings in one staging folder: pull_allen builds its folder aside and renames it
        # onto the staging folder, then the sessions join it, and the whole is renamed into place.
        with atomic_dir(out_dir) as staging:
            pull_allen(params.data.allen, staging, progress=progress)
            return add_to_manifest(staging, pull_allen_neuropixels(params, staging, progress))

    def pull_summary(self, manifest: dict, out_dir: Path) -> str:
        return pull_summary_with_neuropixels(super().pull_summary, manifest, out_dir)
