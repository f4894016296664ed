"""The torch ridge path: outer folds against scikit-learn, chunking, precision and devices."""

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr
from sklearn.linear_model import RidgeCV
from sklearn.metrics import make_scorer, mean_squared_error

from deepmouse.errors import DataError
from deepmouse.metrics.folds import stimulus_folds
from deepmouse.metrics.ridge import fit_ridge_folds, fit_ridge_loo, relative_alpha_grid

RELATIVE_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def _layers(seed, n_stimuli, sizes):
    """Standardised features of a few layers sharing a latent structure, and targets reading them."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n_stimuli, 8))
    layers = []
    for p in sizes:
        x = np.tanh(latent @ rng.normal(size=(8, p)) / 3 + 0.5 * rng.normal(size=(n_stimuli, p)))
        layers.append((x - x.mean(axis=0)) / x.std(axis=0))
    signal = latent @ rng.normal(size=(8, 16))
    targets = signal * np.geomspace(0.05, 3.0, 16) + rng.normal(size=(n_stimuli, 16)) + 5.0
    return layers, targets


def _sklearn_folds(z, targets, folds, relative_alphas):
    scorer = make_scorer(mean_squared_error, greater_is_better=False)
    scores, alphas = [], []
    for test in folds:
        train = np.setdiff1d(np.arange(len(z)), test)
        grid = relative_alpha_grid(z[train] @ z[train].T, relative_alphas)
        model = RidgeCV(alphas=grid, fit_intercept=True, alpha_per_target=True, scoring=scorer)
        predicted = model.fit(z[train], targets[train]).predict(z[test])
        scores.append([pearsonr(predicted[:, j], targets[test, j])[0] for j in range(targets.shape[1])])
        alphas.append(model.alpha_)
    return np.array(scores), np.array(alphas)


@pytest.mark.parametrize("sizes", [(5, 30, 300)], ids=["p<n,p=n,p>>n"])
def test_folds_of_every_layer_equal_scikit_learn_ridgecv(sizes):
    layers, targets = _layers(0, 30, sizes)
    folds = stimulus_folds(30, 4, 2, np.random.default_rng(1))
    result = fit_ridge_folds(np.stack([z @ z.T for z in layers]), targets, folds, relative_alphas=RELATIVE_ALPHAS,
                             device="cpu")
    assert result.fold_scores.shape == (len(folds), len(layers), targets.shape[1])
    for layer, z in enumerate(layers):
        scores, alphas = _sklearn_folds(z, targets, folds, RELATIVE_ALPHAS)
        np.testing.assert_allclose(result.fold_scores[:, layer], scores, atol=1e-6, rtol=0)
        np.testing.assert_allclose(result.fold_alphas[:, layer], alphas, rtol=1e-9)


def test_paper_alpha_folds_equal_brute_force_refits():
    layers, targets = _layers(2, 24, (12,))
    z = layers[0]
    folds = stimulus_folds(24, 3, 1, np.random.default_rng(3))
    result = fit_ridge_folds((z @ z.T)[None], targets, folds, alphas=[1.0], device="cpu")
    for f, test in enumerate(folds):
        train = np.setdiff1d(np.arange(24), test)
        x, y = z[train], targets[train]
        coef = np.linalg.solve((x - x.mean(0)).T @ (x - x.mean(0)) + np.eye(12), (x - x.mean(0)).T @ (y - y.mean(0)))
        predicted = y.mean(0) + (z[test] - x.mean(0)) @ coef
        expected = [pearsonr(predicted[:, j], targets[test, j])[0] for j in range(targets.shape[1])]
        np.testing.assert_allclose(result.fold_scores[f, 0], expected, atol=1e-10)
        np.testing.assert_array_equal(result.fold_alphas[f, 0], 1.0)


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 4096])
def test_results_do_not_depend_on_the_chunk_size(chunk_size):
    layers, targets = _layers(4, 40, (6, 40, 200))
    kernels = np.stack([z @ z.T for z in layers])
    folds = stimulus_folds(40, 5, 1, np.random.default_rng(5))
    reference = fit_ridge_folds(kernels, targets, folds, relative_alphas=RELATIVE_ALPHAS, device="cpu", chunk_size=3)
    chunked = fit_ridge_folds(kernels, targets, folds, relative_alphas=RELATIVE_ALPHAS, device="cpu",
                              chunk_size=chunk_size)
    np.testing.assert_array_equal(chunked.fold_alphas, reference.fold_alphas)
    np.testing.assert_allclose(chunked.fold_scores, reference.fold_scores, atol=1e-12, rtol=0)
    np.testing.assert_allclose(chunked.fold_errors, reference.fold_errors, atol=1e-12, rtol=0)
    loo = fit_ridge_loo(kernels[1], targets, RELATIVE_ALPHAS, device="cpu", chunk_size=chunk_size)
    loo_reference = fit_ridge_loo(kernels[1], targets, RELATIVE_ALPHAS, device="cpu", chunk_size=3)
    np.testing.assert_allclose(loo.predictions, loo_reference.predictions, atol=1e-12, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu():
    layers, targets = _layers(8, 119, (20, 119, 1500))
    kernels = np.stack([z @ z.T for z in layers])
    folds = stimulus_folds(119, 10, 2, np.random.default_rng([0, 0]))
    cpu = fit_ridge_folds(kernels, targets, folds, relative_alphas=RELATIVE_ALPHAS, device="cpu")
    cuda = fit_ridge_folds(kernels, targets, folds, relative_alphas=RELATIVE_ALPHAS, device="cuda")
    np.testing.assert_array_equal(cuda.fold_alphas, cpu.fold_alphas)
    np.testing.assert_allclose(cuda.fold_scores, cpu.fold_scores, atol=1e-6, rtol=0)
    np.testing.assert_allclose(cuda.fold_errors, cpu.fold_errors, atol=1e-6, rtol=0)
    loo_cpu = fit_ridge_loo(kernels[2], targets, [1.0], device="cpu")
    loo_cuda = fit_ridge_loo(kernels[2], targets, [1.0], device="cuda")
    np.testing.assert_allclose(loo_cuda.predictions, loo_cpu.predictions, atol=1e-6 * np.abs(targets).max(), rtol=0)


def test_bad_inputs_name_what_is_wrong():
    layers, targets = _layers(9, 24, (5,))
    kernels = np.stack([layers[0] @ layers[0].T, np.ones((24, 24))])
    folds = stimulus_folds(24, 3, 1, np.random.default_rng(0))
    with pytest.raises(DataError, match="layer index 1: kernel: centred trace is 0 on the training stimuli of fold 0"):
        fit_ridge_folds(kernels, targets, folds, relative_alphas=RELATIVE_ALPHAS, device="cpu")
    asymmetric = kernels.copy()
    asymmetric[0, 0, 1] += 1.0
    with pytest.raises(DataError, match="layer index 0: kernel: not symmetric"):
        fit_ridge_folds(asymmetric, targets, folds, alphas=[1.0], device="cpu")
    with pytest.raises(ValueError, match="n_layers"):
        fit_ridge_folds(kernels[0], targets, folds, alphas=[1.0], device="cpu")
    with pytest.raises(ValueError, match="exactly one"):
        fit_ridge_folds(kernels, targets, folds, device="cpu")
    with pytest.raises(ValueError, match="chunk_size: need a positive integer"):
        fit_ridge_folds(kernels, targets, folds, alphas=[1.0], device="cpu", chunk_size=0)
    with pytest.raises(ValueError, match=r"fold 1: stimulus index out of range"):
        fit_ridge_folds(kernels, targets, [folds[0], np.array([1, 2, 30])], alphas=[1.0], device="cpu")
    with pytest.raises(ValueError, match="fold 0: need at least 3 held-out"):
        fit_ridge_folds(kernels, targets, [np.array([0, 1])], alphas=[1.0], device="cpu")
