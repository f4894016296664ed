"""What a two-photon session recorded, and where: the metadata every source and the NWB layout share."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

import numpy as np

from deepmouse.errors import DataError


@dataclass(frozen=True)
class SessionMetadata:
    """What one imaging session recorded, and where.

    Attributes
    ----------
    experiment_id : int
        Ophys experiment (session) id.
    container_id : int
        Experiment container id (one field of view across sessions A, B, C).
    area : str
        Targeted structure, e.g. ``"VISp"``.
    cre_line : str
        Cre line without allele suffix, e.g. ``"Cux2-CreERT2"``.
    imaging_depth : int
        Imaging depth below the pia, in µm.
    session_type : str or None
        E.g. ``"three_session_B"`` (the session with natural scenes). Always
        set when read from a file, and required to write one.
    genotype : str or None
        Full genotype; its first ``;``-separated part names the Cre line,
        e.g. ``"Cux2-CreERT2/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt"``.
        Always set when read from a file, and required to write one.
    specimen_name, sex, indicator, excitation_lambda, fov : str or None
        Further Brain Observatory metadata, written and read when present.
    age_days : int or None
        Age of the mouse at the session.
    session_start_time : str or None
        ISO 8601 start time.
    device, device_name : str or None
        Microscope and rig names, e.g. ``"Nikon A1R-MP multiphoton microscope"``
        and ``"CAM2P.1"``.
    """

    experiment_id: int
    container_id: int
    area: str
    cre_line: str
    imaging_depth: int
    session_type: str | None = None
    genotype: str | None = None
    specimen_name: str | None = None
    sex: str | None = None
    age_days: int | None = None
    session_start_time: str | None = None
    indicator: str | None = None
    excitation_lambda: str | None = None
    fov: str | None = None
    device: str | None = None
    device_name: str | None = None

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SessionMetadata:
        """Build from a mapping such as a manifest entry or a table row.

        Keys that are not fields (e.g. ``file``) are ignored; numpy scalars
        become Python values and missing values (None, NaN) leave a field unset.

        Raises
        ------
        DataError
            If the record lacks experiment_id, container_id, area, cre_line or imaging_depth.
        """
        names = {f.name for f in fields(cls)}
        values = {key: _plain_value(value) for key, value in record.items() if key in names}
        values = {key: value for key, value in values.items() if value is not None}
        missing = [name for name in _CORE_METADATA if name not in values]
        if missing:
            raise DataError(f"session metadata {dict(record)!r}: missing {', '.join(missing)}")
        for name in ("experiment_id", "container_id", "imaging_depth", "age_days"):
            if name in values:
                values[name] = int(values[name])
        return cls(**values)


_CORE_METADATA = ("experiment_id", "container_id", "area", "cre_line", "imaging_depth")


def _plain_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def cre_line_from_genotype(genotype: str) -> str:
    """The Cre line named by a Brain Observatory genotype string.

    ``"Cux2-CreERT2/Cux2-CreERT2;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt"`` ->
    ``"Cux2-CreERT2"``: the first locus, without its allele suffix.
    """
    return genotype.split(";")[0].split("/")[0].strip()
