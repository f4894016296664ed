"""Quality filters of Neuropixels units: which sorted units are measured at all.

A unit is kept when it passes every filter of ``responses.neuropixels.units``
(:class:`~deepmouse.config.UnitFiltersConfig`) and lies in one of the areas asked for;
every other unit is counted under the first reason of :data:`DROP_REASONS` it meets,
in that order, so the counts add up to the units dropped:

- ``noise``, ``invalid_channel`` (with ``require_good_quality``): sorted as noise, or
  its peak channel is marked ``valid_data: false`` (allensdk's ``filter_by_validity``);
- ``outside_brain``: its peak channel has no structure (allensdk's
  ``filter_out_of_brain_units``); ``outside_areas``: a structure other than the areas
  scored (hippocampus, thalamus, other visual areas);
- ``amplitude_cutoff``, ``presence_ratio``, ``isi_violations``: the release's metrics
  against its own default thresholds (allensdk ``UNIT_FILTER_DEFAULTS``: at most 0.1,
  at least 0.95, at most 0.5); ``snr``, ``firing_rate``: optional minimums, off by default.

A NaN metric fails its filter, as in allensdk (a comparison with NaN is false there too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from deepmouse.config import AREAS, UnitFiltersConfig

DROP_REASONS = {
    "noise": "quality is not 'good'",
    "invalid_channel": "the peak channel is marked valid_data false",
    "outside_brain": "the peak channel has no structure acronym",
    "outside_areas": "the peak channel's structure is not one of the areas scored",
    "amplitude_cutoff": "amplitude_cutoff above amplitude_cutoff_maximum",
    "presence_ratio": "presence_ratio below presence_ratio_minimum",
    "isi_violations": "isi_violations above isi_violations_maximum",
    "snr": "snr below snr_minimum",
    "firing_rate": "firing_rate below firing_rate_minimum",
}
"""Why a unit is dropped, in the order the reasons are tried; each unit counts once."""


@dataclass(frozen=True)
class UnitSelection:
    """The units kept by :func:`filter_units` and the units dropped, by reason."""

    kept: pd.Index
    """Unit ids kept, in the order of the units table."""
    dropped: dict[str, int]
    """Every key of :data:`DROP_REASONS`, in its order."""

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())


def filter_units(units: pd.DataFrame, cfg: UnitFiltersConfig, areas: Sequence[str] = AREAS) -> UnitSelection:
    """Apply the unit quality filters (module docstring).

    Parameters
    ----------
    units : DataFrame
        Index ``unit_id``; columns as :data:`deepmouse.data.layouts.ecephys.UNIT_COLUMNS`.
    cfg : UnitFiltersConfig
    areas : sequence of str, default the six visual areas
        Structure acronyms kept.

    Returns
    -------
    UnitSelection
    """
    structure = units["ecephys_structure_acronym"]
    failed = {
        "noise": (units["quality"] != "good").to_numpy() if cfg.require_good_quality else _none(units),
        "invalid_channel": ~units["valid_data"].to_numpy(bool) if cfg.require_good_quality else _none(units),
        "outside_brain": structure.isna().to_numpy(),
        "outside_areas": ~structure.isin(list(areas)).to_numpy(),
        "amplitude_cutoff": _above(units["amplitude_cutoff"], cfg.amplitude_cutoff_maximum),
        "presence_ratio": _below(units["presence_ratio"], cfg.presence_ratio_minimum),
        "isi_violations": _above(units["isi_violations"], cfg.isi_violations_maximum),
        "snr": _below(units["snr"], cfg.snr_minimum),
        "firing_rate": _below(units["firing_rate"], cfg.firing_rate_minimum),
    }
    taken = np.zeros(len(units), dtype=bool)
    dropped = {}
    for reason in DROP_REASONS:
        first_here = failed[reason] & ~taken
        dropped[reason] = int(first_here.sum())
        taken |= first_here
    return UnitSelection(units.index[~taken], dropped)


def _none(units: pd.DataFrame) -> np.ndarray:
    return np.zeros(len(units), dtype=bool)


def _above(metric: pd.Series, maximum: float | None) -> np.ndarray:
    """Fails ``metric <= maximum`` (NaN fails); nothing fails without a maximum."""
    if maximum is None:
        return np.zeros(len(metric), dtype=bool)
    return ~(metric.to_numpy(np.float64) <= maximum)


def _below(metric: pd.Series, minimum: float | None) -> np.ndarray:
    """Fails ``metric >= minimum`` (NaN fails); nothing fails without a minimum."""
    if minimum is None:
        return np.zeros(len(metric), dtype=bool)
    return ~(metric.to_numpy(np.float64) >= minimum)
