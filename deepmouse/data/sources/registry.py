"""``data.source`` names and the classes that implement them: a plain dict and its dispatchers.

Adding a source is adding its module, one entry here and one in
:data:`~deepmouse.data.sources.readers.READERS` (see :mod:`deepmouse.data.sources.base`).
"""

from __future__ import annotations

from typing import Mapping

from deepmouse.data.sources.allen import AllenSource
from deepmouse.data.sources.base import Source
from deepmouse.data.sources.nwb_dir import NwbDirSource
from deepmouse.data.sources.simulated import SimulatedSource
from deepmouse.data.sources.table import TableSource
from deepmouse.errors import SourceError

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
