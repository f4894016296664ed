"""Paired model comparisons: is model A better than model B at a site, and by how much?

For every method, layer selection and site, every pair of models is compared on the
same units — neurons for regression, stimuli for RSA — through the bootstrap replicates
that ``score_model`` draws with the same resamples for every model. The difference's
percentile interval and two-sided p-value come from the paired replicates; p-values are
adjusted with Benjamini-Hochberg across the pairs of each site, and a pair is
``distinguishable`` when its q-value is below ``scoring.comparisons.fdr``.

The statistics of one pair are those of
:func:`deepmouse.metrics.bootstrap.paired_bootstrap_difference`; at zoo scale (237 models:
27,966 pairs × 24 sites, 1,000 replicates each) calling it once per pair costs minutes, so
the pairs of a site are computed together, a block of pairs at a time, from one matrix of
the site's replicates (replicate × model): each block's differences are one subtraction of
two row selections, their percentiles one ``numpy.percentile`` along the replicates (the
same order statistics and interpolation as the per-pair call, so the same numbers to the
last bit), and the p-values' counts one comparison with 0. A pair with a non-finite
difference in some replicate (a replicate that could not be scored) is handed to the
per-pair function, which leaves those replicates out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from deepmouse.config import ScoringConfig
from deepmouse.errors import DataError
from deepmouse.metrics.bootstrap import benjamini_hochberg, paired_bootstrap_difference

GROUP = ["method", "layer_selection", "site_kind", "site"]
COLUMNS = GROUP + ["model_a", "model_b", "difference", "ci_low", "ci_high", "p_value", "q_value", "distinguishable"]

_DIFFERENCES_PER_BLOCK = 1 << 22
"""Replicate differences formed at once (32 MiB of float64): bounds memory whatever the number of pairs."""


def compare_models(model_scores: pd.DataFrame, replicates: pd.DataFrame, cfg: ScoringConfig) -> pd.DataFrame:
    """Every pair of models within each method × layer selection × site.

    Parameters
    ----------
    model_scores : the ``model_scores`` table (observed scores).
    replicates : the ``bootstrap_replicates`` table (model, group, replicate, value).

    Returns
    -------
    DataFrame with :data:`COLUMNS`, one row per unordered pair (``model_a`` < ``model_b``),
    sorted by :data:`GROUP`, then ``model_a``, then ``model_b``.

    Raises
    ------
    DataError
        If a model has replicates at a site but no observed score there, or a pair has no
        finite replicate difference; naming the site and the models.
    """
    observed = model_scores.set_index(GROUP + ["model_id"])["score"]
    parts = []
    for key, group in replicates.groupby(GROUP, sort=True):
        wide = group.pivot(index="replicate", columns="model_id", values="value").sort_index(axis=1)
        models = wide.columns.to_numpy()
        if models.size < 2:
            continue
        site_keys = pd.MultiIndex.from_tuples([(*key, model) for model in models])
        absent = ~site_keys.isin(observed.index)
        if absent.any():
            raise DataError(f"model_scores: no score for {models[absent][0]} at {_describe(key)}, "
                            "which has bootstrap replicates")
        scores = observed.loc[site_keys].to_numpy(dtype=np.float64)
        first, second = np.triu_indices(models.size, k=1)  # itertools.combinations order
        try:
            difference, low, high, p_value = paired_differences(scores, wide.to_numpy(dtype=np.float64),
                                                                 first, second, cfg.bootstrap.level)
        except DataError as err:
            raise DataError(f"{_describe(key)}: {err}") from None
        q_value = benjamini_hochberg(p_value)
        parts.append(pd.DataFrame({
            **{column: value for column, value in zip(GROUP, key)},
            "model_a": models[first], "model_b": models[second], "difference": difference, "ci_low": low,
            "ci_high": high, "p_value": p_value, "q_value": q_value, "distinguishable": q_value < cfg.comparisons.fdr,
        }))
    if not parts:
        return pd.DataFrame({column: pd.Series(dtype=_EMPTY_DTYPES.get(column, object)) for column in COLUMNS})
    return pd.concat(parts, ignore_index=True)[COLUMNS]


def paired_differences(observed: np.ndarray, replicates: np.ndarray, first: np.ndarray, second: np.ndarray,
                       level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`~deepmouse.metrics.bootstrap.paired_bootstrap_difference` of many pairs of models at one site.

    Parameters
    ----------
    observed : ndarray of shape (n_models,)
        Each model's observed score.
    replicates : ndarray of shape (n_boot, n_models)
        Each model's bootstrap replicates, drawn from the same resamples (row ``i``: resample ``i``).
    first, second : ndarray of shape (n_pairs,)
        Column indices of the pairs' models A and B.
    level : float in (0, 1)

    Returns
    -------
    difference, ci_low, ci_high, p_value : ndarrays of shape (n_pairs,)
        Equal to the per-pair function's, pair by pair.

    Raises
    ------
    DataError
        If a pair has no finite replicate difference, naming its columns.
    """
    by_model = np.ascontiguousarray(np.asarray(replicates, dtype=np.float64).T)  # each model's replicates contiguous
    n_pairs, n_boot = first.size, by_model.shape[1]
    observed = np.asarray(observed, dtype=np.float64)
    difference = observed[first] - observed[second]
    low, high, p_value = np.empty(n_pairs), np.empty(n_pairs), np.empty(n_pairs)
    quantiles = [50 * (1 - level), 50 * (1 + level)]
    step = max(1, _DIFFERENCES_PER_BLOCK // max(n_boot, 1))
    for start in range(0, n_pairs, step):
        block = slice(start, min(start + step, n_pairs))
        a, b = first[block], second[block]
        paired = by_model[a] - by_model[b]  # (pairs in block, n_boot)
        finite = np.isfinite(paired).all(axis=1)
        whole = paired[finite]
        if whole.size:
            low[block][finite], high[block][finite] = np.percentile(whole, quantiles, axis=1)
            below, above = np.sum(whole <= 0, axis=1), np.sum(whole >= 0, axis=1)
            p_value[block][finite] = np.minimum(1.0, 2 * (np.minimum(below, above) + 1) / (n_boot + 1))
        for offset in np.flatnonzero(~finite):
            i = start + offset
            try:
                _, low[i], high[i], p_value[i] = paired_bootstrap_difference(
                    observed[first[i]], observed[second[i]], by_model[first[i]], by_model[second[i]], level)
            except DataError as err:
                raise DataError(f"models at columns {first[i]} and {second[i]}: {err}") from None
    return difference, low, high, p_value


_EMPTY_DTYPES = {"difference": np.float64, "ci_low": np.float64, "ci_high": np.float64, "p_value": np.float64,
                 "q_value": np.float64, "distinguishable": bool}


def _describe(key: tuple) -> str:
    return ", ".join(f"{column} {value}" for column, value in zip(GROUP, key))
