"""The read side of a pull's Neuropixels sessions: spike-count responses and units as neurons.

A pull whose manifest has a ``"neuropixels"`` entry
(:mod:`deepmouse.data.sources.neuropixels_pull`) holds Neuropixels session files in its
``neuropixels/`` folder. Their units are measured here as the two-photon neurons are:

- units: the quality filters of ``responses.neuropixels.units`` and the six visual areas
  (:func:`deepmouse.data.units.filter_units`), dropped units counted by reason;
- responses: the firing rate in ``responses.neuropixels.window`` per presentation
  (:func:`deepmouse.data.spikes.session_spike_responses`), dropped presentations counted by
  reason, a session that lost more than ``responses.max_dropped_fraction`` stopped
  (:func:`deepmouse.data.responses.check_dropped`);
- neurons: reliability, selectivity, running modulation and selection as for any listed
  neuron (:func:`deepmouse.data.selection.annotate_listed_neurons`), unchanged.

Neuron ids
----------
Unit ids and cell specimen ids are numbered apart by the Allen Institute, but nothing
promises they never meet (and a user's own files may number from 1 in both). A unit's
``neuron_id`` is therefore ``NEUROPIXELS_ID_OFFSET + unit_id``: both kinds of id of the
releases are below 2**32, far below the offset 10**12, so the two ranges cannot overlap,
and the unit id stays readable in the neuron id (``units.parquet`` keeps it as ``unit_id``).
A unit id outside ``[0, NEUROPIXELS_ID_OFFSET)`` stops the stage naming its file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from deepmouse.data.sources.base import MANIFEST, Progress
from deepmouse.errors import DataError

NEUROPIXELS_FOLDER = "neuropixels"
"""The subfolder of a pull that holds its Neuropixels session files."""

SCENES_FILE = "scenes.npy"
"""The scenes of a Neuropixels-only simulated pull, in its Neuropixels folder."""

UNITS_FILE = "neuropixels_units.parquet"
"""Per-unit metadata of the kept Neuropixels units, in the responses folder."""

NEUROPIXELS_ID_OFFSET = 10**12
"""Added to a unit id to make its neuron id (module docstring)."""

MODALITY_OF = {"calcium": "two-photon calcium imaging (dF/F)", "neuropixels": "Neuropixels spike counts (spikes/s)"}
"""The values of the ``modality`` column, and what the responses are in each."""


@dataclass(frozen=True)
class NeuropixelsResponses:
    """The Neuropixels part of a responses folder."""

    trials: pd.DataFrame
    """Trial responses of the kept units, :data:`~deepmouse.data.responses.TRIAL_COLUMNS`."""
    units: pd.DataFrame
    """One row per kept unit: neuron_id, unit_id, experiment_id (session), container_id (animal),
    area, probe_id, cre_line, imaging_depth, cortical_layer."""
    dropped: dict
    """Units and presentations dropped, per session and in all, by reason (for ``dropped.json``)."""


def neuropixels_files(raw_dir: Path, manifest: dict) -> list[Path]:
    """The Neuropixels session files a manifest lists (none without a ``"neuropixels"`` entry).

    Raises
    ------
    DataError
        If the entry lacks its folder or sessions.
    """
    entry = manifest.get("neuropixels")
    if entry is None:
        return []
    try:
        return [raw_dir / entry["folder"] / session["file"] for session in entry["sessions"]]
    except (KeyError, TypeError) as err:
        raise DataError(f"{raw_dir / MANIFEST}: key 'neuropixels': missing {err}; run the pull stage again") from None


def measure_neuropixels(params, paths: list[Path], progress: Progress) -> NeuropixelsResponses:
    """Spike-count responses of the kept units of every session file (module docstring).

    Parameters
    ----------
    params : Params
        ``responses.neuropixels`` (window, unit filters) and ``responses.max_dropped_fraction``.
    paths : list of Path
        The session NWB files.
    progress : callable

    Returns
    -------
    NeuropixelsResponses

    Raises
    ------
    NwbLayoutError
        If a file is not a readable Neuropixels session file, or lacks a dataset (naming both).
    DataError
        If a session loses more than ``responses.max_dropped_fraction`` of its presentations,
        a unit id lies outside ``[0, NEUROPIXELS_ID_OFFSET)``, or no unit of any session is kept.
    """
    from deepmouse.config import AREAS
    from deepmouse.data.layouts.ecephys import read_ecephys_session
    from deepmouse.data.responses import check_dropped
    from deepmouse.data.spikes import DROP_REASONS as PRESENTATION_REASONS
    from deepmouse.data.spikes import session_spike_responses
    from deepmouse.data.units import DROP_REASONS as UNIT_REASONS
    from deepmouse.data.units import filter_units
    from deepmouse.failures import doing

    cfg = params.responses.neuropixels
    frames, units, sessions = [], [], []
    for i, path in enumerate(paths, start=1):
        with doing(f"measuring the Neuropixels responses in {path}"):
            session = read_ecephys_session(path)
            ids = session.units.index.to_numpy(np.int64)
            outside = ids[(ids < 0) | (ids >= NEUROPIXELS_ID_OFFSET)]
            if outside.size:
                raise DataError(f"{path}: unit id {outside[0]} outside [0, {NEUROPIXELS_ID_OFFSET}); neuron ids "
                                "of units are the unit id plus that offset")
            kept = filter_units(session.units, cfg.units, AREAS)
            measured = session_spike_responses(session, cfg.window, unit_ids=kept.kept)
        check_dropped(measured, path, session.session_id, params.responses.max_dropped_fraction)
        trials = measured.trials
        trials["neuron_id"] = trials["neuron_id"] + NEUROPIXELS_ID_OFFSET
        frames.append(trials)
        table = session.units.loc[kept.kept]
        units.append(pd.DataFrame({
            "neuron_id": table.index.to_numpy(np.int64) + NEUROPIXELS_ID_OFFSET,
            "unit_id": table.index.to_numpy(np.int64),
            "experiment_id": np.int64(session.session_id),
            "container_id": np.int64(session.specimen_id),
            "area": table["ecephys_structure_acronym"].astype(str).to_numpy(),
            "probe_id": table["probe_id"].to_numpy(np.int64),
        }))
        sessions.append({"session_id": int(session.session_id), "file": path.name,
                         "n_units": len(session.units), "n_units_kept": len(kept.kept),
                         "units_dropped": kept.dropped, "n_presentations": measured.n_presentations,
                         "n_dropped": measured.n_dropped, "dropped": measured.dropped})
        unit_reasons = ", ".join(f"{n} {r}" for r, n in kept.dropped.items() if n)
        progress(f"neuropixels [{i}/{len(paths)}] {path.name}: {len(kept.kept)} of {len(session.units)} units kept"
                 + (f" ({unit_reasons})" if unit_reasons else "")
                 + f", {measured.n_dropped} of {measured.n_presentations} presentations dropped")
    metadata = pd.concat(units, ignore_index=True) if units else pd.DataFrame()
    if metadata.empty:
        raise DataError(f"{paths[0].parent if paths else 'neuropixels'}: no Neuropixels unit passes the filters "
                        "of responses.neuropixels.units in the six visual areas (dropped counts: "
                        f"{_sum_reasons([s['units_dropped'] for s in sessions], UNIT_REASONS)})")
    # No Cre line or imaging depth: the probes cross every layer, and most animals are wild type.
    metadata["cre_line"] = "unknown"
    metadata["imaging_depth"] = pd.array([pd.NA] * len(metadata), dtype="Int64")
    metadata["cortical_layer"] = "unknown"
    dropped = {
        "units": {"n_units": sum(s["n_units"] for s in sessions), "n_kept": len(metadata),
                  "dropped": _sum_reasons([s["units_dropped"] for s in sessions], UNIT_REASONS)},
        "presentations": {"n_presentations": sum(s["n_presentations"] for s in sessions),
                          "n_dropped": sum(s["n_dropped"] for s in sessions),
                          "dropped": _sum_reasons([s["dropped"] for s in sessions], PRESENTATION_REASONS)},
        "sessions": sessions,
    }
    return NeuropixelsResponses(pd.concat(frames, ignore_index=True), metadata, dropped)


def neuropixels_neurons(params, trials: pd.DataFrame, means: pd.DataFrame, units: pd.DataFrame) -> pd.DataFrame:
    """The kept units as neurons: metadata, reliability, flags and selection, as for listed neurons."""
    from deepmouse.data.selection import annotate_listed_neurons

    return annotate_listed_neurons(units, trials, means, params.neurons)


def _sum_reasons(counts: list[dict], reasons: dict) -> dict:
    return {reason: int(sum(c.get(reason, 0) for c in counts)) for reason in reasons}
