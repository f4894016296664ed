"""Paired model comparisons: is model A better than model B at a site, and by how much?

For every method, layer selection and site, every pair of models is compared on the
same units — neurons for regression, stimuli for RSA — through the bootstrap replicates
that ``score_model`` draws with the same resamples for every model. The difference's
percentile interval and two-sided p-value come from the paired replicates; p-values are
adjusted with Benjamini-Hochberg across the pairs of each site, and a pair is
``distinguishable`` when its q-value is below ``scoring.comparisons.fdr``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from deepmouse.config import ScoringConfig
from deepmouse.metrics.bootstrap import benjamini_hochberg, paired_bootstrap_difference

GROUP = ["method", "layer_selection", "modality", "site_kind", "site"]
"""Models are compared within one method, rule and site of one modality (never across recordings)."""
COLUMNS = GROUP + ["model_a", "model_b", "difference", "ci_low", "ci_high", "p_value", "q_value", "distinguishable"]


def compare_models(model_scores: pd.DataFrame, replicates: pd.DataFrame, cfg: ScoringConfig) -> pd.DataFrame:
    """Every pair of models within each method × layer selection × site.

    Parameters
    ----------
    model_scores : the ``model_scores`` table (observed scores).
    replicates : the ``bootstrap_replicates`` table (model, group, replicate, value).

    Returns
    -------
    DataFrame with :data:`COLUMNS`, one row per unordered pair (``model_a`` < ``model_b``).
    """
    rows = []
    observed = model_scores.set_index(GROUP + ["model_id"])["score"]
    for key, group in replicates.groupby(GROUP, sort=True):
        wide = group.pivot(index="replicate", columns="model_id", values="value").sort_index(axis=1)
        pairs = []
        for model_a, model_b in itertools.combinations(wide.columns, 2):
            difference, low, high, p_value = paired_bootstrap_difference(
                observed[(*key, model_a)], observed[(*key, model_b)], wide[model_a].to_numpy(),
                wide[model_b].to_numpy(), cfg.bootstrap.level)
            pairs.append((*key, model_a, model_b, difference, low, high, p_value))
        if not pairs:
            continue
        q_values = benjamini_hochberg(np.array([p[-1] for p in pairs]))
        rows.extend((*pair, q, bool(q < cfg.comparisons.fdr)) for pair, q in zip(pairs, q_values))
    return pd.DataFrame(rows, columns=COLUMNS)
