"""The readers of pulled folders by ``data.source`` name: a plain dict and its dispatchers.

Kept apart from :mod:`deepmouse.data.sources.registry` so that the stages after ``pull``
import no pull code (see :mod:`deepmouse.data.sources.base`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from deepmouse.data.sources.base import MANIFEST, Reader, check_listed_files, load_manifest
from deepmouse.data.sources.ophys_nwb import OphysNwbReader
from deepmouse.data.sources.table_reader import TableReader
from deepmouse.errors import DataError, SourceError

READERS: dict[str, type[Reader]] = {
    "simulated": OphysNwbReader,
    "nwb_dir": OphysNwbReader,
    "allen": OphysNwbReader,
    "table": TableReader,
}


def get_reader(name: str, *, key: str, readers: Mapping[str, type[Reader]] | None = None) -> Reader:
    """The reader of the folders the source ``name`` pulls.

    Raises
    ------
    SourceError
        If no reader has that name; the message names ``key`` and lists the valid names.
    """
    readers = READERS if readers is None else readers
    if name not in readers:
        raise SourceError(f"{key}: unknown source {name!r}; valid sources: {', '.join(sorted(readers))}")
    return readers[name]()


def read_pulled(raw_dir: str | Path, *, readers: Mapping[str, type[Reader]] | None = None
                ) -> tuple[Reader, dict, list[Path]]:
    """The reader of a pulled folder, its manifest, and the files it lists (checked to exist).

    Raises
    ------
    DataError
        If the manifest is missing or damaged, or lists a file that is not there.
    SourceError
        If the manifest names no known source.
    """
    raw_dir = Path(raw_dir)
    manifest = load_manifest(raw_dir)
    reader = get_reader(manifest["source"], key=f"{raw_dir / MANIFEST}: source", readers=readers)
    paths = reader.pulled_files(raw_dir, manifest)
    check_listed_files(raw_dir, paths)
    return reader, manifest, paths


def reader_of_responses(responses_dir: str | Path, *, readers: Mapping[str, type[Reader]] | None = None) -> Reader:
    """The reader whose responses a folder holds, known by the metadata file it wrote.

    Raises
    ------
    DataError
        If the folder holds no reader's metadata file.
    """
    readers = READERS if readers is None else readers
    responses_dir = Path(responses_dir)
    for reader in readers.values():
        if (responses_dir / reader.responses_metadata).is_file():
            return reader()
    expected = sorted({reader.responses_metadata for reader in readers.values()})
    raise DataError(f"{responses_dir}: holds none of {', '.join(expected)}; run the responses stage first")
