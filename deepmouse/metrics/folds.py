"""Seeded splits of the stimuli for cross-validated scores and layer selection.

- ``stimulus_folds``: repeated K-fold partitions (regression: outer folds, each
  scored on its held-out stimuli after fitting — alpha and layer chosen — on the rest);
- ``stimulus_halves``: repeated random halves (RSA: choose the layer on the
  stimulus pairs within one half, score it on the pairs within the other).

Every model and site is scored on the same splits (they depend on the seed and the
number of stimuli only), so scores and their paired differences line up.
"""

from __future__ import annotations

import numpy as np


def stimulus_folds(n_stimuli: int, n_folds: int, n_repeats: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Held-out stimuli of ``n_repeats`` random K-fold partitions.

    Parameters
    ----------
    n_stimuli : int
    n_folds : int
        Folds per partition; fold sizes differ by at most one.
    n_repeats : int
        Independent partitions (a fresh permutation each).
    rng : numpy.random.Generator

    Returns
    -------
    folds : list of int ndarrays, length n_folds * n_repeats
        Sorted held-out indices; each partition covers every stimulus once.
    """
    if not 2 <= n_folds <= n_stimuli:
        raise ValueError(f"n_folds must be in [2, n_stimuli={n_stimuli}], got {n_folds}")
    if n_repeats < 1:
        raise ValueError(f"n_repeats must be positive, got {n_repeats}")
    folds = []
    for _ in range(n_repeats):
        order = rng.permutation(n_stimuli)
        folds.extend(np.sort(part) for part in np.array_split(order, n_folds))
    return folds


def stimulus_halves(n_stimuli: int, n_splits: int, rng: np.random.Generator) -> np.ndarray:
    """Membership of the first half in ``n_splits`` random halvings of the stimuli.

    Returns
    -------
    in_first_half : ndarray of bool, shape (n_splits, n_stimuli)
        ``n_stimuli // 2`` stimuli are in the first half of each split.
    """
    if n_stimuli < 8:
        raise ValueError(f"need at least 8 stimuli to split in halves, got {n_stimuli}")
    if n_splits < 1:
        raise ValueError(f"n_splits must be positive, got {n_splits}")
    halves = np.zeros((n_splits, n_stimuli), dtype=bool)
    for split in range(n_splits):
        halves[split, rng.permutation(n_stimuli)[: n_stimuli // 2]] = True
    return halves
