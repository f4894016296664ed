"""The neural side of scoring: selected neurons lined up with their responses and ceilings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from deepmouse.config import AREAS
from deepmouse.errors import DataError

SITE_COLUMNS = {"area": ("area",), "area_layer": ("area", "cortical_layer"), "area_cre": ("area", "cre_line")}
"""How each ``scoring.rsa.sites`` kind groups neurons into sites."""

MODALITIES = ("calcium", "neuropixels")
"""The recordings a site can belong to, in the order sites are listed (``neurons.parquet``'s ``modality``)."""

MODALITY_SEPARATOR = ":"
"""Between a modality and its site in the site keys of :meth:`NeuralData.sites` (``neuropixels:VISp``)."""

CEILINGS = {
    "split_half": lambda neurons: neurons["reliability"].to_numpy(dtype=np.float64),
    "cc_max": lambda neurons: neurons["cc_max"].to_numpy(dtype=np.float64) ** 2,
}
"""Per-neuron ceilings as reliabilities (fractions of variance): split-half Spearman-Brown
reliability, or CC_max squared. A score r is normalised as r / sqrt(ceiling)."""


@dataclass(frozen=True)
class NeuralData:
    """Selected neurons lined up with their responses.

    Attributes
    ----------
    neurons : DataFrame with one row per selected neuron (``neurons.parquet`` columns), in
        the column order of ``means``.
    means : ndarray of shape (n_stimuli, n_neurons)
        Mean response per stimulus (blank last).
    half_a, half_b : ndarray of shape (n_stimuli, n_neurons), or None
        Mean responses over even and odd trials, for the RSA noise ceiling; None when
        the source gave mean responses without trials (``data.source: table``), so
        that no ceiling is computed.
    """

    neurons: pd.DataFrame
    means: np.ndarray
    half_a: np.ndarray | None
    half_b: np.ndarray | None

    @property
    def has_trials(self) -> bool:
        """Whether trial responses are there: without them no noise ceiling is computed."""
        return self.half_a is not None

    def sites(self, kinds: Iterable[str]) -> list[tuple[str, str, np.ndarray]]:
        """``(site_kind, site, column indices)`` for every site with at least one neuron.

        Neurons of different modalities never share a site: a site of a modality other than
        ``calcium`` is keyed ``<modality>:<site>`` (``neuropixels:VISp``), so that every method,
        its bootstrap resamples and the paired comparisons stay within one modality, while the
        two-photon sites keep the keys (and so the seeds) they have always had.
        :func:`split_modality` turns the key into a ``modality`` column and the bare site.
        """
        neurons = self.neurons.reset_index(drop=True)
        modality = neurons["modality"] if "modality" in neurons.columns else pd.Series("calcium", index=neurons.index)
        out = []
        for kind in kinds:
            columns = list(SITE_COLUMNS[kind])
            for name, rows in neurons.groupby(modality.to_numpy(), sort=True).groups.items():
                groups = neurons.loc[rows].groupby(columns, sort=True).indices
                for key, index in groups.items():
                    key = key if isinstance(key, tuple) else (key,)
                    site = "|".join(str(k) for k in key)
                    site = site if name == "calcium" else f"{name}{MODALITY_SEPARATOR}{site}"
                    out.append((kind, site, np.sort(np.asarray(rows)[index])))
        return sorted(out, key=lambda s: (s[0], _modality_order(s[1]), _area_order(s[1]), s[1]))

    def ceilings(self, kind: str) -> np.ndarray:
        """Per-neuron ceiling (a reliability) of ``kind`` in :data:`CEILINGS`, shape (n_neurons,)."""
        if kind not in CEILINGS:
            raise ValueError(f"unknown ceiling {kind!r}; valid: {', '.join(CEILINGS)}")
        try:
            return CEILINGS[kind](self.neurons)
        except KeyError as err:
            raise DataError(f"neurons.parquet: no column {err.args[0]!r} for scoring.ceiling: {kind}") from None


TRIAL_COLUMNS = ["neuron_id", "stimulus_index", "trial", "response"]


def read_neural_data(neurons_path: str | Path, responses_dir: str | Path) -> NeuralData:
    """:func:`load_neural_data` of the files the ``neurons`` and ``responses`` stages write.

    Only the selected neurons' rows of ``means.parquet`` and ``trials.parquet`` are read: the
    filter goes to the Parquet reader, so the rows of the others are dropped row group by row
    group instead of after the whole file is in memory (at the reference study's scale the
    trials of all 37,400 recorded neurons are 222.5 million rows, of which the 6,500 selected
    hold a sixth).
    """
    responses_dir = Path(responses_dir)
    neurons = pd.read_parquet(neurons_path)
    ids = neurons.loc[neurons["selected"], "neuron_id"].astype("int64").tolist()
    if not ids:  # load_neural_data names the problem before it reads the responses
        return load_neural_data(neurons, pd.DataFrame(), pd.DataFrame(columns=TRIAL_COLUMNS))
    rows = [("neuron_id", "in", ids)]
    return load_neural_data(neurons, pd.read_parquet(responses_dir / "means.parquet", filters=rows),
                            pd.read_parquet(responses_dir / "trials.parquet", columns=TRIAL_COLUMNS, filters=rows))


def load_neural_data(neurons: pd.DataFrame, means: pd.DataFrame, trials: pd.DataFrame) -> NeuralData:
    """Line up the selected neurons' mean and split-half responses.

    Parameters
    ----------
    neurons : DataFrame from ``neurons.parquet`` (all neurons, with ``selected``).
    means : DataFrame from ``means.parquet`` (neuron_id, stimulus_index, mean_response).
    trials : DataFrame from ``trials.parquet`` (neuron_id, stimulus_index, trial, response);
        no rows when the source gave means alone (then ``half_a`` and ``half_b`` are None).
    """
    selected = neurons[neurons["selected"]].sort_values(["area", "neuron_id"], key=_area_key)
    if selected.empty:
        raise DataError("neurons.parquet: no neuron is selected; lower neurons.reliability_threshold")
    ids = selected["neuron_id"].to_numpy()
    wide = _pivot(means[means["neuron_id"].isin(ids)], "mean_response", ids, "means.parquet")
    if trials.empty:
        return NeuralData(selected.reset_index(drop=True), wide, None, None)
    chosen = trials[trials["neuron_id"].isin(ids)]
    even = chosen[chosen["trial"] % 2 == 0].groupby(["neuron_id", "stimulus_index"], as_index=False)["response"].mean()
    odd = chosen[chosen["trial"] % 2 == 1].groupby(["neuron_id", "stimulus_index"], as_index=False)["response"].mean()
    half_a = _pivot(even, "response", ids, "trials.parquet (even trials)")
    half_b = _pivot(odd, "response", ids, "trials.parquet (odd trials)")
    return NeuralData(selected.reset_index(drop=True), wide, half_a, half_b)


def _pivot(frame: pd.DataFrame, value: str, ids: np.ndarray, name: str) -> np.ndarray:
    wide = frame.pivot(index="stimulus_index", columns="neuron_id", values=value)
    missing = [i for i in ids if i not in wide.columns]
    if missing:
        raise DataError(f"{name}: no responses for selected neuron {missing[0]} ({len(missing)} missing)")
    wide = wide.reindex(columns=ids)
    if wide.isna().to_numpy().any():
        row, col = np.argwhere(wide.isna().to_numpy())[0]
        raise DataError(f"{name}: missing or NaN response for neuron {ids[col]}, stimulus {wide.index[row]}")
    return wide.to_numpy(dtype=np.float64)


def split_modality(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its ``site`` keys (:meth:`NeuralData.sites`) split into ``modality`` and the bare site.

    ``modality`` is inserted before ``site_kind``; ``neuropixels:VISp`` becomes ``neuropixels``, ``VISp``,
    and a key without a modality is ``calcium``.
    """
    # Split each distinct key once: a model's bootstrap replicates repeat a dozen keys 48,000 times.
    keys, position = np.unique(table["site"].astype(str).to_numpy(), return_inverse=True)
    split = [key.split(MODALITY_SEPARATOR, 1) if MODALITY_SEPARATOR in key else ["calcium", key] for key in keys]
    out = table.copy()
    out["site"] = np.array([bare for _, bare in split], dtype=object)[position]
    out.insert(out.columns.get_loc("site_kind"), "modality",
               np.array([modality for modality, _ in split], dtype=object)[position])
    return out


def _modality_order(site: str) -> int:
    modality = site.split(MODALITY_SEPARATOR)[0] if MODALITY_SEPARATOR in site else "calcium"
    return MODALITIES.index(modality) if modality in MODALITIES else len(MODALITIES)


def _area_order(site: str) -> int:
    area = site.split(MODALITY_SEPARATOR)[-1].split("|")[0]
    return AREAS.index(area) if area in AREAS else len(AREAS)


def _area_key(column: pd.Series) -> pd.Series:
    return column.map(_area_order) if column.name == "area" else column
