"""Layer selection for one site, on the observed data and inside every bootstrap replicate.

Both methods are written the same way: a matrix of *weightings* of the shared units,
whose first row weights every unit once (the observed data) and whose other rows are
bootstrap resamples of the units (neurons for regression, stimuli for RSA). Each
selection rule is applied to every row, so the interval of a selected score includes the
variability of the selection itself (DESIGN §6), and the replicates of different models,
drawn with the same weightings, can be compared pairwise.

- ``max``: the layer with the best score on all the data; optimistic, because the same
  data choose the layer and score it (the reference study's rule).
- ``cv``: the layer is chosen on data the score never sees. Regression: in each outer
  fold, the layer whose inner-LOO error on the training stimuli (normalised per neuron,
  averaged over the site's neurons) is lowest is scored on the held-out stimuli.
  RSA: in each random halving of the stimuli, the layer that best matches the neural
  RDM on the pairs within one half is scored on the pairs within the other, both ways.
  CKA: the same halvings; the layer with the best CKA on one half's stimuli is scored by
  its CKA on the other half's, both ways.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepmouse.metrics.cka import cka_sites
from deepmouse.metrics.products import default_device, matmul
from deepmouse.metrics.rsa import pearson_from_moments, pearson_moment_columns, score_entries


@dataclass(frozen=True)
class Selected:
    """One selection rule applied to every weighting.

    Attributes
    ----------
    values : ndarray of shape (n_weightings,)
        The selected score under each weighting; ``values[0]`` is the observed score.
    choices : ndarray of int, shape (n_choices,)
        Layer positions the rule chose on the observed data: one for ``max``, one per
        fold or split direction for ``cv``.
    unit_scores : ndarray of shape (n_units,) or None
        Regression: each neuron's observed score under the rule (for normalisation).
    """

    values: np.ndarray
    choices: np.ndarray
    unit_scores: np.ndarray | None = None

    def modal_choice(self) -> tuple[int, float]:
        """The most frequent observed choice (lowest position on ties) and its frequency."""
        positions, counts = np.unique(self.choices, return_counts=True)
        best = int(np.argmax(counts))
        return int(positions[best]), float(counts[best] / self.choices.size)


def select_regression(scores: np.ndarray, fold_scores: np.ndarray, fold_errors: np.ndarray,
                      weights: np.ndarray, rules: tuple[str, ...]) -> dict[str, Selected]:
    """``max`` and ``cv`` selection of a site's regression scores.

    Parameters
    ----------
    scores : ndarray of shape (n_layers, n_units)
        Each layer's score per neuron (of this site).
    fold_scores, fold_errors : ndarray of shape (n_folds, n_layers, n_units)
        Held-out Pearson r per fold, and the normalised inner-LOO error on that fold's
        training stimuli (see ``deepmouse.metrics.ridge.fit_ridge_folds``).
    weights : ndarray of shape (n_weightings, n_units)
        Rows sum to 1; row 0 is uniform (the observed mean over neurons).
    rules : subset of ("max", "cv")
    """
    out = {}
    if "max" in rules:
        per_layer = weights @ scores.T  # (n_weightings, n_layers)
        choice = int(np.argmax(per_layer[0]))
        out["max"] = Selected(per_layer.max(axis=1), np.array([choice]), scores[choice])
    if "cv" in rules:
        rows = np.arange(weights.shape[0])
        values = np.zeros(weights.shape[0])
        choices = np.empty(fold_scores.shape[0], dtype=np.intp)
        unit_scores = np.zeros(scores.shape[1])
        for fold, (held_out, training_error) in enumerate(zip(fold_scores, fold_errors)):
            chosen = np.argmin(weights @ training_error.T, axis=1)
            values += (weights @ held_out.T)[rows, chosen]
            choices[fold] = chosen[0]
            unit_scores += held_out[chosen[0]]
        out["cv"] = Selected(values / fold_scores.shape[0], choices, unit_scores / fold_scores.shape[0])
    return out


def select_rsa(model_entries: np.ndarray, neural_entries: np.ndarray, pair_weights: np.ndarray,
               halves: np.ndarray, pairs: tuple[np.ndarray, np.ndarray], method: str,
               rules: tuple[str, ...]) -> dict[str, Selected]:
    """``max`` and ``cv`` selection of a site's RSA scores.

    Parameters
    ----------
    model_entries : ndarray of shape (n_layers, n_pairs)
        Upper-triangle RDM entries of every layer.
    neural_entries : ndarray of shape (n_pairs,)
    pair_weights : ndarray of shape (n_weightings, n_pairs)
        How often each stimulus pair occurs in each weighting: ``c_i c_j`` for a
        bootstrap resample with stimulus counts ``c``; row 0 all ones.
    halves : ndarray of bool, shape (n_splits, n_stimuli)
        First-half membership of each random halving (``stimulus_halves``).
    pairs : (rows, cols) int ndarrays of shape (n_pairs,)
        The stimuli of each upper-triangle pair.
    method : {"pearson", "spearman", "kendall_tau_a"}
    rules : subset of ("max", "cv")
    """
    return select_rsa_sites(model_entries, np.asarray(neural_entries)[None], pair_weights, halves, pairs, method,
                            rules)[0]


def select_rsa_sites(model_entries: np.ndarray, neural_entries: np.ndarray, pair_weights: np.ndarray,
                     halves: np.ndarray, pairs: tuple[np.ndarray, np.ndarray], method: str,
                     rules: tuple[str, ...]) -> list[dict[str, Selected]]:
    """:func:`select_rsa` for several sites under the same weightings, one dict per site.

    ``neural_entries`` has one row per site. With ``pearson``, the layers' own moments
    (their weighted sums of ``x`` and ``x²``) are computed once for a group of sites: the
    product per subset of pairs has ``(g + 2) n_layers`` columns for ``g`` sites instead of
    ``3 g n_layers``. Sites are grouped so that the columns stay near
    :data:`RSA_COLUMN_BYTES`.
    """
    neural_entries = np.atleast_2d(neural_entries)
    out = []
    for group in _site_groups(len(neural_entries), *np.shape(model_entries)):
        scores = _weighted_scorer(model_entries, neural_entries[group], pair_weights, method)
        selected = [{} for _ in group]
        if "max" in rules:
            per_layer = scores(np.ones(neural_entries.shape[1], dtype=bool))
            for site, values in zip(selected, per_layer):
                site["max"] = Selected(np.nanmax(values, axis=1), np.array([int(np.nanargmax(values[0]))]))
        if "cv" in rules:
            first, second = pairs
            values = np.zeros((len(group), pair_weights.shape[0]))
            choices = []
            for in_half in halves:
                on_a = scores(in_half[first] & in_half[second])
                on_b = scores(~in_half[first] & ~in_half[second])
                for choose_on, score_on in ((on_a, on_b), (on_b, on_a)):
                    chosen = np.argmax(np.nan_to_num(choose_on, nan=-np.inf), axis=2)  # (n_sites, n_weightings)
                    values += np.take_along_axis(score_on, chosen[:, :, None], axis=2)[:, :, 0]
                    choices.append(chosen[:, 0])
            choices = np.stack(choices, axis=1)
            for site, value, chosen in zip(selected, values, choices):
                site["cv"] = Selected(value / choices.shape[1], chosen)
        out.extend(selected)
    return out


RSA_COLUMN_BYTES = 256 << 20
"""Bytes of the Pearson moment columns (float64, one row per stimulus pair) built at once:
sites are scored in groups of ``RSA_COLUMN_BYTES // (8 n_pairs n_layers) - 2`` (at least one),
so a run with many sites (``scoring.rsa.sites: [experiment]``) does not hold every site's
columns. 256 MB holds 25 sites of a 173-layer model at 119 stimuli."""


def _site_groups(n_sites: int, n_layers: int, n_pairs: int) -> list[np.ndarray]:
    """Consecutive groups of site positions, each small enough for :data:`RSA_COLUMN_BYTES`."""
    size = max(1, RSA_COLUMN_BYTES // (8 * max(n_pairs, 1) * max(n_layers, 1)) - 2)
    return [np.arange(start, min(start + size, n_sites)) for start in range(0, n_sites, size)]


def select_cka(layer_grams: np.ndarray, neural_gram: np.ndarray, counts: np.ndarray, halves: np.ndarray,
               estimator: str, rules: tuple[str, ...]) -> dict[str, Selected]:
    """``max`` and ``cv`` selection of a site's CKA scores.

    Parameters
    ----------
    layer_grams : ndarray of shape (n_layers, n_stimuli, n_stimuli)
        Gram matrices of every layer's stimulus-centred features.
    neural_gram : ndarray of shape (n_stimuli, n_stimuli)
    counts : ndarray of shape (n_weightings, n_stimuli)
        How often each stimulus occurs in each weighting; row 0 all ones.
    halves : ndarray of bool, shape (n_splits, n_stimuli)
        First-half membership of each random halving (``stimulus_halves``).
    estimator : {"unbiased", "biased"}
    rules : subset of ("max", "cv")
    """
    return select_cka_sites(layer_grams, np.asarray(neural_gram)[None], counts, halves, estimator, rules)[0]


def select_cka_sites(layer_grams: np.ndarray, neural_grams: np.ndarray, counts: np.ndarray, halves: np.ndarray,
                     estimator: str, rules: tuple[str, ...], names: list[str] | None = None
                     ) -> list[dict[str, Selected]]:
    """:func:`select_cka` for several sites under the same weightings, one dict per site.

    The layers' own terms are computed once for every site (``cka_sites``).
    """
    out = [{} for _ in range(len(neural_grams))]
    if "max" in rules:
        per_layer = cka_sites(layer_grams, neural_grams, counts, estimator, names=names)
        for site, scores in zip(out, per_layer):
            site["max"] = Selected(np.nanmax(scores, axis=1), np.array([int(np.nanargmax(scores[0]))]))
    if "cv" in rules:
        values = np.zeros((len(neural_grams), counts.shape[0]))
        choices = []
        for in_half in halves:
            # Restricting the Grams to a half costs a quarter of the whole; zero counts would not.
            on_a, on_b = (_cka_within(layer_grams, neural_grams, counts, np.flatnonzero(half), estimator, names)
                          for half in (in_half, ~in_half))
            for choose_on, score_on in ((on_a, on_b), (on_b, on_a)):
                chosen = np.argmax(np.nan_to_num(choose_on, nan=-np.inf), axis=2)  # (n_sites, n_weightings)
                values += np.take_along_axis(score_on, chosen[:, :, None], axis=2)[:, :, 0]
                choices.append(chosen[:, 0])
        choices = np.stack(choices, axis=1)
        for site, (value, chosen) in enumerate(zip(values, choices)):
            out[site]["cv"] = Selected(value / choices.shape[1], chosen)
    return out


def _cka_within(layer_grams, neural_grams, counts, stimuli, estimator, names):
    """Every layer's CKA on the given stimuli under every weighting, ``(n_sites, n_weightings, n_layers)``."""
    return cka_sites(layer_grams[:, stimuli][:, :, stimuli], neural_grams[:, stimuli][:, :, stimuli],
                     counts[:, stimuli], estimator, names=names)


def _weighted_scorer(model_entries, neural_entries, pair_weights, method):
    """``score(pair_mask) -> (n_sites, n_weightings, n_layers)``: every layer's comparison with every site
    (``neural_entries``, one row each) on the masked pairs."""
    if method == "pearson":
        # The moment columns are the same for every subset of pairs: built once per group of sites.
        columns = pearson_moment_columns(model_entries, neural_entries)
        device = default_device()

        def score_pearson(mask):
            # Every pair (``max``) multiplies the columns as they are, without a copy.
            weights, rows = (pair_weights, columns) if mask.all() else (pair_weights[:, mask], columns[mask])
            return pearson_from_moments(matmul(weights, rows, device=device), len(model_entries), len(neural_entries))

        return score_pearson

    counts = pair_weights.astype(np.int64)

    def score(mask):
        # Rank comparisons are not weighted sums: expand each resample into its pairs.
        kept = np.flatnonzero(mask)
        replicates = []
        for row in counts:
            index = np.repeat(kept, row[kept])
            replicates.append([score_entries(model_entries[:, index], site[index], method) for site in neural_entries])
        return np.stack(replicates, axis=1)

    return score
