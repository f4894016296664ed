"""``data.source: table``: recordings of the user's own, given as tables (docs/data-sources.md, "Your own recordings").

Reading and checking the tables is :mod:`deepmouse.data.table`; the pull writes them
normalised, with the images, into its folder, which
:class:`~deepmouse.data.sources.table_reader.TableReader` reads.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from deepmouse.data.sources.base import Progress, Source, describe_files
from deepmouse.data.sources.table_reader import TableReader

class TableSource(Source):
    """Mean responses (and optionally trials) per neuron and image, with per-neuron metadata."""

    name = "table"
    reader = TableReader

    def describe(self, params) -> dict:
        """``data.table``, its tables and every file of its images folder (relative to the project).

        With ``images: null`` the Brain Observatory scenes come from the AllenSDK cache, so
        ``data.allen.cache_dir`` and the NWB files of that cache (relative to it) too.
        """
        from deepmouse.data.table import input_files

        data = params.data
        described = {"table": dataclasses.asdict(data.table),
                     "files": describe_files(input_files(data.table), Path.cwd())}
        if data.table.images is None:
            from deepmouse.data.allen import cached_files

            described["allen_cache_dir"] = data.allen.cache_dir
            described["files"] += describe_files(cached_files(dataclasses.replace(data.allen, events=False)),
                                                 Path(data.allen.cache_dir))
        return described

    def pull(self, params, out_dir: Path, progress: Progress) -> dict:
        from deepmouse.data.table import pull_table

        # Validates every table and image before it opens its staging folder: a bad input writes nothing.
        return pull_table(params.data.table, params.data.allen, out_dir, progress=progress)

    def pull_summary(self, manifest: dict, out_dir: Path) -> str:
        trials = "with trials" if manifest["trial_responses"] else "means only, no trials"
        return (f"pull: {manifest['n_neurons']} neurons in {len(manifest['experiments'])} experiments "
                f"({', '.join(manifest['areas'])}), {trials}, from tables into {out_dir}")
