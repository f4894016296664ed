"""``data.source`` names and the classes that implement them: a plain dict and its dispatchers.

Adding a source is adding its module and one entry here (see
:mod:`deepmouse.data.sources.base`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from deepmouse.data.sources.allen import AllenSource
from deepmouse.data.sources.base import MANIFEST, Source, check_listed_files, load_manifest
from deepmouse.data.sources.nwb_dir import NwbDirSource
from deepmouse.data.sources.simulated import SimulatedSource
from deepmouse.data.sources.table import TableSource
from deepmouse.errors import DataError, SourceError

SOURCES: dict[str, type[Source]] = {
    "simulated": SimulatedSource,
    "nwb_dir": NwbDirSource,
    "allen": AllenSource,
    "table": TableSource,
}


def get_source(name: str, *, key: str = "data.source", sources: Mapping[str, type[Source]] | None = None) -> Source:
    """The source registered as ``name``.

    Parameters
    ----------
    name : str
    key : str
        Where the name was read, for the error message (a params key or a manifest).
    sources : mapping of str to Source subclass, optional
        The registry; :data:`SOURCES` by default.

    Raises
    ------
    SourceError
        If no source has that name; the message lists the valid ones.
    """
    sources = SOURCES if sources is None else sources
    if name not in sources:
        raise SourceError(f"{key}: unknown source {name!r}; valid sources: {', '.join(sorted(sources))}")
    return sources[name]()


def read_pulled(raw_dir: str | Path, *, sources: Mapping[str, type[Source]] | None = None
                ) -> tuple[Source, dict, list[Path]]:
    """The source that wrote a pulled folder, its manifest, and the files it lists (checked to exist).

    Raises
    ------
    DataError
        If the manifest is missing or lists a file that is not there.
    SourceError
        If the manifest names no known source.
    """
    raw_dir = Path(raw_dir)
    manifest = load_manifest(raw_dir)
    source = get_source(manifest["source"], key=f"{raw_dir / MANIFEST}: source", sources=sources)
    paths = source.pulled_files(raw_dir, manifest)
    check_listed_files(raw_dir, paths)
    return source, manifest, paths


def source_of_responses(responses_dir: str | Path, *, sources: Mapping[str, type[Source]] | None = None) -> Source:
    """The source whose responses a folder holds, known by the metadata file it wrote.

    Sources that share a read side (the NWB sources) write the same metadata file and read
    it the same way, so the first registered of them serves.

    Raises
    ------
    DataError
        If the folder holds no source's metadata file.
    """
    sources = SOURCES if sources is None else sources
    responses_dir = Path(responses_dir)
    for source in sources.values():
        if (responses_dir / source.responses_metadata).is_file():
            return source()
    expected = sorted({source.responses_metadata for source in sources.values()})
    raise DataError(f"{responses_dir}: holds none of {', '.join(expected)}; run the responses stage first")
