"""Neuron annotation and selection: reliability, image selectivity, running modulation, layer.

Every neuron is recorded with its metadata and flags, selected or not
(DESIGN §3, "Neuron selection"):

- ``reliability``: split-half reliability of its responses over the 119
  conditions, Spearman–Brown corrected and averaged over ``cfg.n_splits``
  random splits (:func:`deepmouse.metrics.reliability.split_half_reliability`).
  Each experiment draws its splits from its own generator,
  ``default_rng(SeedSequence(cfg.seed, spawn_key=(experiment_id,)))``, so a
  neuron's reliability does not depend on which other experiments are present.
- ``cc_max``: CC_max of Schoppe et al. (2016), the largest correlation a model
  can reach with the neuron's trial means (:func:`deepmouse.metrics.reliability.cc_max`);
  ``cc_max**2`` and ``reliability`` both estimate the reliability of the trial
  means. In [0, 1]; 0 where noise explains all of their variance.
- ``anova_p`` / ``image_selective``: one-way ANOVA of the trial responses over
  the 119 conditions (as ``scipy.stats.f_oneway``), ``p < cfg.selectivity_alpha``.
- ``running_r`` / ``running_modulated``: Pearson correlation between the
  response and the running speed over the trials of the neuron's preferred
  images (the ``PREFERRED_FRACTION`` of the 119 conditions with the largest
  mean response), both taken relative to their mean over the trials of the
  same stimulus (a within-stimulus correlation, so that running that happens
  to coincide with some images is not mistaken for modulation); trials
  without running speed are left out. Preferred images, because running acts
  mostly as a gain on visual responses: pooled over all images, a gain raises
  responses above the neuron's mean and lowers those below it, and once the
  baseline (the tail of the previous presentation, seen in the same running
  state) is subtracted, the two cancel. Modulated when the two-sided test of
  that correlation (``n - k - 1`` degrees of freedom for ``n`` trials in ``k``
  stimuli) gives ``p < cfg.running_alpha``: a partial correlation given the
  stimulus, the same test as the t-test of the speed coefficient in
  ``response ~ stimulus + speed``. Like Allen's own running-modulation test
  (a t-test of running against stationary trials at the preferred image) it
  treats trials as independent. NaN and not modulated when the running speed
  does not vary within stimuli.
- ``cortical_layer``: from the Cre line where it labels one layer, else from
  the imaging depth (:func:`cortical_layer`).
- ``selected``: ``reliability >= cfg.reliability_threshold``, responsive, image
  selective if ``cfg.require_selective``, and not running modulated if
  ``cfg.exclude_running_modulated`` (the default: the reference study left out
  neurons with significant running modulation); with ``cfg.max_per_area``, only
  the most reliable of those in each area are kept (ties broken by lower neuron
  id).

Neurons given as tables without trials (``data.source: table``,
:func:`annotate_listed_neurons`) have none of the trial statistics: they are
NaN or missing, never filled in, and selection then keeps every responsive
neuron (no reliability threshold).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd
import scipy.stats

from deepmouse.config import NeuronsConfig
from deepmouse.data.nwb import SessionMetadata
from deepmouse.data.responses import trials_array
from deepmouse.errors import ConfigError, DataError
from deepmouse.metrics.reliability import cc_max, split_half_reliability

NEURON_COLUMNS = ("neuron_id", "experiment_id", "container_id", "animal", "area", "cre_line", "imaging_depth",
                  "cortical_layer", "reliability", "cc_max", "anova_p", "image_selective", "running_r",
                  "running_modulated", "responsive", "selected")

# Cre lines whose expression is confined to one layer, by gene symbol (the part
# of the line name before the first "-"). Cux2 labels L2/3 and L4 and is
# resolved by depth; pan-layer lines (Emx1, Slc17a7) and interneuron lines
# (Sst, Vip, Pvalb) fall back to depth alone.
LAYER_BY_CRE_GENE = {
    "Rorb": "L4",
    "Scnn1a": "L4",
    "Nr5a1": "L4",
    "Rbp4": "L5",
    "Tlx3": "L5",
    "Fezf2": "L5",
    "Ntsr1": "L6",
}
PREFERRED_FRACTION = 0.1
"""Fraction of the conditions (largest mean responses) used for running modulation."""

# Upper bounds (µm below pia, exclusive) of the layers when assigned by depth.
LAYER_DEPTH_BOUNDS_UM = (("L2/3", 250), ("L4", 350), ("L5", 500))
DEEPEST_LAYER = "L6"


def cortical_layer(cre_line: str, imaging_depth: float) -> str:
    """The cortical layer of an imaging plane, from its Cre line and depth.

    Layer-specific Cre lines take precedence (Rorb, Scnn1a, Nr5a1 -> L4;
    Rbp4, Tlx3, Fezf2 -> L5; Ntsr1 -> L6; Cux2 -> L2/3 above 250 µm, else L4).
    Otherwise by depth below the pia: < 250 µm L2/3, < 350 µm L4, < 500 µm L5,
    else L6.

    Parameters
    ----------
    cre_line : str
        E.g. ``"Rbp4-Cre_KL100"``.
    imaging_depth : float
        µm below the pia.

    Returns
    -------
    str
        One of ``"L2/3"``, ``"L4"``, ``"L5"``, ``"L6"``.
    """
    gene = cre_line.split("-")[0]
    if gene in LAYER_BY_CRE_GENE:
        return LAYER_BY_CRE_GENE[gene]
    by_depth = next((layer for layer, bound in LAYER_DEPTH_BOUNDS_UM if imaging_depth < bound), DEEPEST_LAYER)
    if gene == "Cux2":
        return "L2/3" if by_depth == "L2/3" else "L4"
    return by_depth


def annotate_neurons(trials: pd.DataFrame, sessions_meta: list[SessionMetadata], cfg: NeuronsConfig) -> pd.DataFrame:
    """One row per neuron with its metadata, reliability, flags and selection.

    Parameters
    ----------
    trials : DataFrame
        Trial responses of one or more experiments, as from
        :func:`deepmouse.data.responses.trial_responses` (columns
        ``experiment_id``, ``neuron_id``, ``stimulus_index``, ``trial``,
        ``response``, ``running_speed``).
    sessions_meta : list of SessionMetadata
        Metadata of (at least) every experiment in ``trials``.
    cfg : NeuronsConfig

    Returns
    -------
    DataFrame
        Columns ``NEURON_COLUMNS``, rows ordered by experiment id, then by the
        neurons' order in the trials. See the module docstring for each flag.

    Raises
    ------
    DataError
        If an experiment has no metadata, a neuron id occurs in two
        experiments, or a neuron's responses are all equal.
    """
    return annotate_experiments(trials.groupby("experiment_id", sort=True), sessions_meta, cfg)


def annotate_experiments(per_experiment: Iterable[tuple[int, pd.DataFrame]], sessions_meta: list[SessionMetadata],
                         cfg: NeuronsConfig) -> pd.DataFrame:
    """:func:`annotate_neurons` of trials given one experiment at a time, in experiment id order.

    Only one experiment's trials need be in memory at once (``experiment_trials`` may be a
    generator reading them from disk), and the result is that of :func:`annotate_neurons`
    on their concatenation.

    Parameters
    ----------
    per_experiment : iterable of (experiment id, DataFrame)
        Each experiment's trials, as ``trials.groupby("experiment_id", sort=True)`` yields them.
    sessions_meta : list of SessionMetadata
    cfg : NeuronsConfig

    Returns
    -------
    DataFrame
        As :func:`annotate_neurons`.

    Raises
    ------
    DataError
        As :func:`annotate_neurons`.
    """
    meta_by_experiment = {meta.experiment_id: meta for meta in sessions_meta}
    tables = []
    for experiment_id, experiment_trials in per_experiment:
        meta = meta_by_experiment.get(int(experiment_id))
        if meta is None:
            raise DataError(f"neurons: experiment {experiment_id} has trials but no session metadata")
        tables.append(_annotate_experiment(experiment_trials, meta, cfg))
    if not tables:
        raise DataError("neurons: no trials")
    neurons = pd.concat(tables, ignore_index=True)
    repeated = neurons["neuron_id"][neurons["neuron_id"].duplicated()]
    if len(repeated):
        neuron_id = repeated.iloc[0]
        experiments = neurons.loc[neurons["neuron_id"] == neuron_id, "experiment_id"].tolist()
        raise DataError(f"neurons: neuron {neuron_id} occurs in experiments {experiments}; ids must be unique")
    neurons["selected"] = select_neurons(neurons, cfg)
    return neurons.loc[:, list(NEURON_COLUMNS)]


def anova_p_values(trials: np.ndarray) -> np.ndarray:
    """One-way ANOVA p-value of each neuron's trial responses over stimuli.

    Equal to ``scipy.stats.f_oneway`` applied to each neuron's groups (one
    group per stimulus, its finite trials), for all neurons at once.

    Parameters
    ----------
    trials : ndarray of shape (n_neurons, n_stimuli, n_trials)
        NaN where a stimulus has fewer trials.

    Returns
    -------
    p : ndarray of shape (n_neurons,)
        0 when responses vary between stimuli but not within them; NaN when
        they vary neither between nor within.
    """
    valid = np.isfinite(trials)
    counts = valid.sum(axis=2)
    filled = np.where(valid, trials, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        group_means = filled.sum(axis=2) / counts
        n_total = counts.sum(axis=1)
        grand_mean = filled.sum(axis=(1, 2)) / n_total
        n_groups = (counts > 0).sum(axis=1)
        between = np.nansum(counts * (group_means - grand_mean[:, None]) ** 2, axis=1)
        within = np.where(valid, trials - group_means[:, :, None], 0.0)
        within = (within**2).sum(axis=(1, 2))
        df_between = n_groups - 1
        df_within = n_total - n_groups
        f_stat = (between / df_between) / (within / df_within)
    return scipy.stats.f.sf(f_stat, df_between, df_within)


def running_correlation(
    responses: np.ndarray, speed: np.ndarray, preferred_fraction: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Within-stimulus correlation of responses to preferred images with running speed, and its p-value.

    Parameters
    ----------
    responses : ndarray of shape (n_neurons, n_stimuli, n_trials)
        NaN where a stimulus has fewer trials.
    speed : ndarray of shape (n_stimuli, n_trials)
        Running speed of each trial (shared by the neurons of one experiment);
        NaN where missing.
    preferred_fraction : float, default ``PREFERRED_FRACTION``
        Each neuron's ``max(1, round(preferred_fraction * n_stimuli))``
        stimuli with the largest mean response are used (ties to the lower
        stimulus index); 1 uses every stimulus.

    Returns
    -------
    r, p : ndarrays of shape (n_neurons,)
        Pearson r over the used trials of (response - its stimulus mean) and
        (speed - its stimulus mean), using trials with both values; two-sided
        p-value with ``n - k - 1`` degrees of freedom (``n`` trials in ``k``
        stimuli). NaN where undefined.
    """
    if preferred_fraction is None:
        preferred_fraction = PREFERRED_FRACTION
    n_neurons, n_stimuli, _ = responses.shape
    n_preferred = max(1, int(round(preferred_fraction * n_stimuli)))
    valid = np.isfinite(responses)
    with np.errstate(invalid="ignore", divide="ignore"):
        stimulus_mean = np.where(valid, responses, 0.0).sum(axis=2) / valid.sum(axis=2)
    ranking = np.argsort(-np.nan_to_num(stimulus_mean, nan=-np.inf), axis=1, kind="stable")[:, :n_preferred]
    preferred = np.zeros((n_neurons, n_stimuli), dtype=bool)
    np.put_along_axis(preferred, ranking, True, axis=1)

    used = np.isfinite(responses) & np.isfinite(speed)[None] & preferred[:, :, None]
    counts = used.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        response_mean = np.where(used, responses, 0.0).sum(axis=2) / counts
        speed_mean = np.where(used, speed[None], 0.0).sum(axis=2) / counts
        response_dev = np.where(used, responses - response_mean[:, :, None], 0.0)
        speed_dev = np.where(used, speed[None] - speed_mean[:, :, None], 0.0)
        r = (response_dev * speed_dev).sum(axis=(1, 2)) / np.sqrt(
            (response_dev**2).sum(axis=(1, 2)) * (speed_dev**2).sum(axis=(1, 2))
        )
        r = np.clip(r, -1.0, 1.0)
        dof = counts.sum(axis=1) - (counts > 0).sum(axis=1) - 1
        t_stat = r * np.sqrt(dof / (1.0 - r**2))
        p = np.where(dof > 0, 2.0 * scipy.stats.t.sf(np.abs(t_stat), np.maximum(dof, 1)), np.nan)
    return r, np.where(np.isfinite(r), p, np.nan)


def annotate_listed_neurons(metadata: pd.DataFrame, trials: pd.DataFrame | None, means: pd.DataFrame,
                            cfg: NeuronsConfig) -> pd.DataFrame:
    """One row per neuron given with metadata of its own (``data.source: table``).

    With trials, every statistic is computed as :func:`annotate_neurons` computes it,
    experiment by experiment (the same seeds, so the same trials give the same numbers).
    Without trials nothing that needs them is measured: ``reliability``, ``cc_max``,
    ``anova_p`` and ``running_r`` are NaN, ``image_selective`` and ``running_modulated``
    are missing (pandas ``boolean``), ``responsive`` says whether the mean responses vary,
    and selection does not filter by reliability (see :func:`select_neurons`).

    Parameters
    ----------
    metadata : DataFrame
        One row per neuron: ``neuron_id``, ``experiment_id``, ``container_id``, ``area``,
        ``cre_line``, ``imaging_depth``, ``cortical_layer``, and optionally ``animal``
        (default: one animal per container, :func:`container_animal`).
    trials : DataFrame or None
        Trial responses of these neurons (columns as for :func:`annotate_neurons`), or
        None (or empty) when only means were given.
    means : DataFrame
        Mean responses (``neuron_id``, ``stimulus_index``, ``mean_response``).
    cfg : NeuronsConfig

    Returns
    -------
    DataFrame
        Columns ``NEURON_COLUMNS``, rows ordered by experiment id, then in ``metadata`` order.

    Raises
    ------
    DataError
        If a neuron of ``metadata`` has no trials (or no means), or a neuron's responses are
        all equal in some split.
    ConfigError
        Without trials, if ``cfg`` asks for what needs them: ``require_selective`` (an ANOVA
        over trials) or ``max_per_area`` (which keeps the most reliable neurons).
    """
    if "animal" not in metadata.columns:  # a source that does not say: one animal per container, as session_animal
        metadata = metadata.assign(animal=[container_animal(c) for c in metadata["container_id"]])
    measured = trials is not None and len(trials) > 0
    if measured:
        stats = pd.concat([_trial_statistics(rows, int(experiment_id), cfg)
                           for experiment_id, rows in trials.groupby("experiment_id", sort=True)], ignore_index=True)
        source = "trials"
    else:
        stats = _mean_statistics(means)
        source = "means"
    missing = metadata.loc[~metadata["neuron_id"].isin(stats["neuron_id"]), "neuron_id"]
    if len(missing):
        raise DataError(f"neurons: neuron {missing.iloc[0]} has no {source} ({len(missing)} neuron(s) without)")
    ordered = metadata.sort_values("experiment_id", kind="stable").reset_index(drop=True)
    neurons = ordered.merge(stats, on="neuron_id", how="left", validate="one_to_one")
    neurons["selected"] = select_neurons(neurons, cfg, reliability_measured=measured)
    return neurons.loc[:, list(NEURON_COLUMNS)]


def _annotate_experiment(trials: pd.DataFrame, meta: SessionMetadata, cfg: NeuronsConfig) -> pd.DataFrame:
    stats = _trial_statistics(trials, int(meta.experiment_id), cfg)
    n = len(stats)
    described = pd.DataFrame({
        "neuron_id": stats["neuron_id"],
        "experiment_id": np.full(n, meta.experiment_id, dtype=np.int64),
        "container_id": np.full(n, meta.container_id, dtype=np.int64),
        "animal": session_animal(meta),
        "area": meta.area,
        "cre_line": meta.cre_line,
        "imaging_depth": np.full(n, meta.imaging_depth, dtype=np.int64),
        "cortical_layer": cortical_layer(meta.cre_line, meta.imaging_depth),
    })
    return pd.concat([described, stats.drop(columns="neuron_id")], axis=1)


def session_animal(meta: SessionMetadata) -> str:
    """The animal a session recorded: its specimen (the Allen donor, e.g. ``Cux2-CreERT2;Camk2a-tTA;Ai93-222426``).

    A file that does not name its specimen stands for one animal per experiment container
    (``container-<id>``): a container is one field of view in one mouse, so this never
    merges two mice, though it may count one mouse with two containers twice.
    """
    if meta.specimen_name is not None and str(meta.specimen_name).strip():
        return str(meta.specimen_name).strip()
    return container_animal(meta.container_id)


def container_animal(container_id) -> str:
    """The animal named after an experiment container, where nothing names the mouse: ``container-<id>``."""
    return f"container-{int(container_id)}"


def _trial_statistics(trials: pd.DataFrame, experiment_id: int, cfg: NeuronsConfig) -> pd.DataFrame:
    """Reliability, CC_max, selectivity, running modulation and responsiveness of one experiment's neurons."""
    neuron_ids = pd.unique(trials["neuron_id"])
    responses = trials_array(trials, neuron_ids)
    speed = trials_array(trials, neuron_ids[:1], column="running_speed")[0]
    reliability = _split_half_reliability(responses, experiment_id, cfg)
    ceiling = cc_max(responses)
    anova_p = anova_p_values(responses)
    running_r, running_p = running_correlation(responses, speed)
    return pd.DataFrame({
        "neuron_id": neuron_ids.astype(np.int64),
        "reliability": reliability,
        "cc_max": ceiling,
        "anova_p": anova_p,
        "image_selective": anova_p < cfg.selectivity_alpha,
        "running_r": running_r,
        "running_modulated": running_p < cfg.running_alpha,
        # A neuron whose responses never vary carries no signal to score, whatever the threshold.
        "responsive": np.nanmax(responses, axis=(1, 2)) > np.nanmin(responses, axis=(1, 2)),
    })


def _mean_statistics(means: pd.DataFrame) -> pd.DataFrame:
    """What can be said of neurons known by their mean responses alone: whether they vary."""
    spread = means.groupby("neuron_id", sort=False)["mean_response"].agg(["max", "min"])
    n = len(spread)
    unknown = pd.array([pd.NA] * n, dtype="boolean")
    return pd.DataFrame({
        "neuron_id": spread.index.to_numpy(dtype=np.int64),
        "reliability": np.full(n, np.nan), "cc_max": np.full(n, np.nan), "anova_p": np.full(n, np.nan),
        "image_selective": unknown, "running_r": np.full(n, np.nan), "running_modulated": unknown.copy(),
        "responsive": (spread["max"] > spread["min"]).to_numpy(),
    })


def _split_half_reliability(responses: np.ndarray, experiment_id: int, cfg: NeuronsConfig) -> np.ndarray:
    """Split-half reliability of one experiment's neurons, 0 where it is undefined.

    A neuron whose responses never vary (no events in any window, say) or whose half-means
    are constant in some split has no measurable reliability; such a neuron is kept, with
    reliability 0, and so never selected, instead of stopping the run. Every neuron sees the
    same random halves: each is drawn from a fresh generator seeded by ``neurons.seed``
    and the experiment id.
    """
    def rng() -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(int(experiment_id),)))

    try:
        return split_half_reliability(responses, cfg.n_splits, rng())
    except DataError:
        pass
    reliability = np.zeros(len(responses))
    for i in range(len(responses)):
        try:
            reliability[i] = split_half_reliability(responses[i:i + 1], cfg.n_splits, rng())[0]
        except DataError:
            reliability[i] = 0.0
    return reliability


def select_neurons(neurons: pd.DataFrame, cfg: NeuronsConfig, *, reliability_measured: bool = True) -> np.ndarray:
    """The ``selected`` flag of every neuron (module docstring).

    With ``reliability_measured=False`` (means without trials) the reliability threshold
    does not apply: every responsive neuron passes it, and what needs trials
    (``cfg.require_selective``, ``cfg.max_per_area``) is refused rather than guessed.

    Raises
    ------
    ConfigError
        Without a measured reliability, if ``cfg.require_selective`` or ``cfg.max_per_area`` is set.
    """
    passes = neurons["responsive"].to_numpy(dtype=bool, copy=True)
    if reliability_measured:
        passes &= (neurons["reliability"] >= cfg.reliability_threshold).to_numpy()
    else:
        if cfg.require_selective:
            raise ConfigError("neurons.require_selective: image selectivity is an ANOVA over trials, and none "
                              "were given (data.table.trials); set it to false or give trial responses")
        if cfg.max_per_area is not None:
            raise ConfigError("neurons.max_per_area: keeps the most reliable neurons of each area, and without "
                              "trial responses (data.table.trials) no reliability is measured; set it to null "
                              "or give trial responses")
    if cfg.require_selective:
        passes &= neurons["image_selective"].to_numpy(dtype=bool)
    if cfg.exclude_running_modulated:
        # Missing where not measured (means without trials): nothing to exclude on.
        passes &= ~neurons["running_modulated"].fillna(False).to_numpy(dtype=bool)
    if cfg.max_per_area is not None:
        candidates = neurons[passes].sort_values(["area", "reliability", "neuron_id"],
                                                 ascending=[True, False, True])
        over_cap = candidates.index[candidates.groupby("area").cumcount().to_numpy() >= cfg.max_per_area]
        passes[neurons.index.get_indexer(over_cap)] = False
    return passes
