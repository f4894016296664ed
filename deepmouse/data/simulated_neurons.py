"""The simulated neurons' tuning: noiseless mean responses to the 119 conditions.

A ``planted`` neuron ``j`` (:func:`simulate_rates`) is a rectified sparse random readout of
the planted layer's standardised features,
``rate[s, j] = peak_j * softplus(beta * (drive[s, j] - theta_j)) / max_s(...)``, with
``drive`` the Gaussian-weighted sum of a random ``sparsity`` fraction of the features,
standardised over stimuli, mixed with a drive private to the neuron's animal
(:func:`animal_drives`; each experiment is one container and one mouse, named by its
``specimen_name``) that carries ``animal_variation`` of its variance. A ``random`` neuron (:func:`simulate_random_rates`) passes
independent Gaussian drives, one per stimulus and neuron, through the same softplus and
peak scaling, so it has no relation to the images or to any model but the same rate
distribution (null data for the scores). Trials, calcium dynamics and noise are
:mod:`deepmouse.data.simulated_sessions`.
"""

from __future__ import annotations

import numpy as np

from deepmouse.errors import DataError

# Rates: softplus sharpness and per-neuron threshold / peak dF/F ranges. Thresholds sit
# below the mean drive, so responses stay positive but mostly in the softplus's graded
# range: with thresholds above the mean, most stimuli evoke nothing, the response is no
# longer close to a linear readout, and the planted layer stops being identifiable from
# the others (measured: best-layer depth off by up to 0.35 with thresholds in [0, 1.5]).
_SOFTPLUS_BETA = 3.0
_THRESHOLD_RANGE = (-1.5, -0.5)
_PEAK_DFF_RANGE = (0.05, 0.3)


def simulate_rates(features: np.ndarray, n_neurons: int, sparsity: float, rng: np.random.Generator, *,
                   animal_drive: np.ndarray | None = None, animal_variation: float = 0.0) -> np.ndarray:
    """Noiseless mean responses of simulated neurons reading out a layer's features.

    Each neuron reads ``max(1, round(sparsity * n_varying))`` features drawn
    at random (without replacement) among those that vary over stimuli, each
    standardised over stimuli so the result does not depend on the layer's
    scale, with i.i.d. Gaussian weights. Its drive (standardised over stimuli)
    is rectified by a softplus after a per-neuron threshold and scaled to a
    peak dF/F between 0.05 and 0.3.

    Parameters
    ----------
    features : ndarray of shape (n_stimuli, n_features)
        The planted layer's output per stimulus (119 rows, blank last).
    n_neurons : int
    sparsity : float
        Fraction of the features each neuron reads, in (0, 1].
    rng : numpy.random.Generator
    animal_drive : ndarray of shape (n_stimuli, n_neurons), optional
        Each neuron's drive private to its animal (:func:`animal_drives`), mixed in so that
        a fraction ``animal_variation`` of the standardised drive's variance is the animal's
        own: what no model and no other animal predicts.
    animal_variation : float in [0, 1)

    Returns
    -------
    rates : ndarray of float64, shape (n_stimuli, n_neurons)
        Non-negative mean dF/F responses, each column varying over stimuli.

    Raises
    ------
    DataError
        If no feature varies over stimuli, or a neuron's drive is constant.
    """
    features = np.asarray(features)
    if features.ndim != 2:
        raise DataError(f"simulate_rates: features must be (n_stimuli, n_features), got shape {features.shape}")
    if not 0 < sparsity <= 1:
        raise ValueError(f"simulate_rates: sparsity must be in (0, 1], got {sparsity}")
    varying = np.flatnonzero(np.ptp(features, axis=0) > 0)
    if varying.size == 0:
        raise DataError("simulate_rates: no feature varies over stimuli")
    n_read = max(1, int(round(sparsity * varying.size)))
    drive = np.empty((features.shape[0], n_neurons))
    # Features as rows: a neuron's columns are gathered as contiguous rows, less than half the
    # time of a gather across the stimulus rows. Its transpose is laid out (column-major) as that gather's
    # result is, so every sum and product below adds in the same order: the same bits.
    by_feature = np.ascontiguousarray(features.T)
    # One neuron at a time: only its n_read columns are standardised, never the whole layer.
    for neuron in range(n_neurons):
        chosen = by_feature[rng.choice(varying, size=n_read, replace=False)].T.astype(np.float64)
        # (x - mean) / std, with the centred values numpy's std forms computed once.
        centred = chosen - chosen.mean(axis=0)
        std = np.sqrt(np.add.reduce(centred * centred, axis=0) / chosen.shape[0])
        drive[:, neuron] = (centred / std) @ rng.standard_normal(n_read)
    spread = drive.std(axis=0)
    if np.any(spread <= 1e-12 * np.sqrt(n_read)):
        raise DataError(f"simulate_rates: neuron {np.argmin(spread)} reads features whose weighted sum is constant")
    drive = (drive - drive.mean(axis=0)) / spread
    if animal_drive is not None and animal_variation > 0:
        private = (animal_drive - animal_drive.mean(axis=0)) / animal_drive.std(axis=0)
        drive = np.sqrt(1 - animal_variation) * drive + np.sqrt(animal_variation) * private
        drive = (drive - drive.mean(axis=0)) / drive.std(axis=0)
    return _rectified_rates(drive, rng)


ANIMAL_DIMENSIONS = 10
"""Stimulus dimensions private to each simulated animal, shared by its neurons."""


def animal_drives(n_stimuli: int, n_neurons: int, rng: np.random.Generator) -> np.ndarray:
    """Drives private to one animal: random readouts of its own ``ANIMAL_DIMENSIONS`` random stimulus
    dimensions, so its neurons share them with each other but not with other animals, shape (n_stimuli, n_neurons)."""
    return rng.standard_normal((n_stimuli, ANIMAL_DIMENSIONS)) @ rng.standard_normal((ANIMAL_DIMENSIONS, n_neurons))


def simulate_random_rates(n_stimuli: int, n_neurons: int, rng: np.random.Generator) -> np.ndarray:
    """Noiseless mean responses unrelated to the stimuli: rectified independent Gaussian drives.

    Each neuron's drive is ``n_stimuli`` independent standard normal values,
    standardised over stimuli, then rectified and scaled exactly as in
    :func:`simulate_rates`. A planted neuron's standardised drive is also
    close to Gaussian (a weighted sum of many features), so both kinds have
    the same distribution of rates; only the relation to the images differs.

    Parameters
    ----------
    n_stimuli : int
        Conditions, 119 (118 images and the blank, last).
    n_neurons : int
    rng : numpy.random.Generator

    Returns
    -------
    rates : ndarray of float64, shape (n_stimuli, n_neurons)
        Non-negative mean dF/F responses, each column varying over stimuli.
    """
    if n_stimuli < 2 or n_neurons < 1:
        raise ValueError(f"simulate_random_rates: need >= 2 stimuli and >= 1 neuron, got {n_stimuli} and {n_neurons}")
    drive = rng.standard_normal((n_stimuli, n_neurons))
    return _rectified_rates((drive - drive.mean(axis=0)) / drive.std(axis=0), rng)


def _rectified_rates(drive: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Softplus of standardised drives (n_stimuli, n_neurons) after per-neuron thresholds, scaled to peaks."""
    n_neurons = drive.shape[1]
    threshold = rng.uniform(*_THRESHOLD_RANGE, n_neurons)
    peak = rng.uniform(*_PEAK_DFF_RANGE, n_neurons)
    rectified = np.logaddexp(0.0, _SOFTPLUS_BETA * (drive - threshold)) / _SOFTPLUS_BETA
    return rectified / rectified.max(axis=0) * peak
