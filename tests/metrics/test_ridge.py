import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.linear_model import RidgeCV

from deepmouse.errors import DataError
from deepmouse.metrics.ridge import (
    RidgeLooResult,
    centre_kernel,
    fit_ridge_loo,
    fit_ridge_loo_layers,
    pearson_columns,
    relative_alpha_grid,
)

N_STIMULI = 24
RELATIVE_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def _standardise(features):
    return (features - features.mean(axis=0)) / features.std(axis=0)


def _problem(seed, n_features, n_targets=12, n_stimuli=N_STIMULI):
    """Features with an offset, and targets from a sparse readout plus noise of varied size."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n_stimuli, n_features)) @ rng.normal(size=(n_features, n_features)) + 3.0
    readout = rng.normal(size=(n_features, n_targets)) * (rng.random((n_features, n_targets)) < 0.3)
    signal = _standardise(features) @ readout
    noise_scale = np.geomspace(0.05, 20.0, n_targets) * (signal.std(axis=0) + 1.0)
    targets = signal + noise_scale * rng.normal(size=(n_stimuli, n_targets)) + rng.normal(size=n_targets)
    return features, targets


def _brute_force_loo(features, targets, alpha):
    """Refit ridge with an unpenalised intercept without each stimulus, and predict it."""
    n, p = features.shape
    predictions = np.empty_like(targets)
    for left_out in range(n):
        keep = np.arange(n) != left_out
        x, y = features[keep], targets[keep]
        x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
        coef = np.linalg.solve((x - x_mean).T @ (x - x_mean) + alpha * np.eye(p), (x - x_mean).T @ (y - y_mean))
        predictions[left_out] = y_mean + (features[left_out] - x_mean) @ coef
    return predictions


def _sklearn_loo(features, targets, alphas):
    model = RidgeCV(
        alphas=alphas,
        fit_intercept=True,
        alpha_per_target=True,
        store_cv_results=True,
        scoring="neg_mean_squared_error",  # with a scoring, cv_results_ holds the LOO predictions
    ).fit(features, targets)
    return model.cv_results_, model.alpha_  # (n, n_targets, n_alphas), (n_targets,)


@pytest.mark.parametrize("n_features", [5, N_STIMULI, 300], ids=["p<n", "p=n", "p>>n"])
def test_matches_sklearn_ridgecv_on_standardised_features(n_features):
    features, targets = _problem(0, n_features)
    z = _standardise(features)
    kernel = z @ z.T
    alphas = relative_alpha_grid(kernel, RELATIVE_ALPHAS)
    result = fit_ridge_loo(kernel, targets, alphas)
    sk_predictions, sk_alphas = _sklearn_loo(z, targets, alphas)

    np.testing.assert_array_equal(result.alphas, sk_alphas)
    assert len(set(result.alphas)) > 1, "the targets should not all choose the same alpha"
    chosen = sk_predictions[:, np.arange(targets.shape[1]), result.alpha_index]
    np.testing.assert_allclose(result.predictions, chosen, atol=1e-6, rtol=0)
    np.testing.assert_allclose(
        result.loo_mse, ((targets[:, :, None] - sk_predictions) ** 2).mean(axis=0).T, rtol=1e-8
    )


@pytest.mark.parametrize("n_features", [5, N_STIMULI, 300], ids=["p<n", "p=n", "p>>n"])
@pytest.mark.parametrize("centre_features_first", [True, False])
def test_matches_sklearn_ridgecv_on_raw_features(n_features, centre_features_first):
    features, targets = _problem(1, n_features)
    x = features - features.mean(axis=0) if centre_features_first else features
    kernel = x @ x.T
    alphas = relative_alpha_grid(kernel, RELATIVE_ALPHAS)
    result = fit_ridge_loo(kernel, targets, alphas)
    sk_predictions, sk_alphas = _sklearn_loo(features, targets, alphas)
    np.testing.assert_array_equal(result.alphas, sk_alphas)
    chosen = sk_predictions[:, np.arange(targets.shape[1]), result.alpha_index]
    np.testing.assert_allclose(result.predictions, chosen, atol=1e-6 * np.abs(targets).max(), rtol=0)


@pytest.mark.parametrize("n_features", [4, N_STIMULI, 60])
@pytest.mark.parametrize("relative_alpha", [1e-2, 1.0, 30.0])
def test_matches_brute_force_refits(n_features, relative_alpha):
    features, targets = _problem(2, n_features, n_targets=3)
    kernel = features @ features.T
    alpha = relative_alpha_grid(kernel, [relative_alpha])
    result = fit_ridge_loo(kernel, targets, alpha)
    np.testing.assert_allclose(
        result.predictions, _brute_force_loo(features, targets, alpha[0]), atol=1e-8 * np.abs(targets).max(), rtol=0
    )


def test_loo_mse_and_alpha_choice_match_brute_force():
    features, targets = _problem(3, 8, n_targets=6)
    kernel = features @ features.T
    alphas = relative_alpha_grid(kernel, RELATIVE_ALPHAS)
    result = fit_ridge_loo(kernel, targets, alphas)
    brute_mse = np.stack([((_brute_force_loo(features, targets, a) - targets) ** 2).mean(axis=0) for a in alphas])
    np.testing.assert_allclose(result.loo_mse, brute_mse, rtol=1e-8)
    np.testing.assert_array_equal(result.alpha_index, brute_mse.argmin(axis=0))
    np.testing.assert_array_equal(result.alphas, alphas[brute_mse.argmin(axis=0)])


def test_vanishing_alpha_matches_least_squares_loo():
    features, targets = _problem(4, 6, n_targets=4)
    design = np.column_stack([np.ones(N_STIMULI), features])
    hat = design @ np.linalg.pinv(design)
    ols_loo = targets - (targets - hat @ targets) / (1 - np.diag(hat))[:, None]
    kernel = features @ features.T
    errors = [
        np.abs(fit_ridge_loo(kernel, targets, relative_alpha_grid(kernel, [alpha])).predictions - ols_loo).max()
        for alpha in (1e-6, 1e-8, 1e-10, 1e-12)
    ]
    # The bias shrinks in proportion to alpha, down to well below rounding of the
    # targets: the kernel's null space must not be left as eigensolver noise.
    assert all(later < 0.05 * earlier for earlier, later in zip(errors, errors[1:]))
    assert errors[-1] < 1e-9 * np.abs(targets).max()


def test_single_alpha_is_fixed_alpha_ridge():
    features, targets = _problem(5, 10)
    z = _standardise(features)
    result = fit_ridge_loo(z @ z.T, targets, [1.0])
    np.testing.assert_array_equal(result.alphas, 1.0)
    np.testing.assert_array_equal(result.alpha_index, 0)
    assert result.loo_mse.shape == (1, targets.shape[1])
    np.testing.assert_allclose(result.predictions, _brute_force_loo(z, targets, 1.0), atol=1e-8)


def test_result_shapes_and_one_dimensional_targets():
    features, targets = _problem(6, 7, n_targets=5)
    kernel = features @ features.T
    alphas = relative_alpha_grid(kernel, RELATIVE_ALPHAS)
    result = fit_ridge_loo(kernel, targets, alphas)
    assert isinstance(result, RidgeLooResult)
    assert result.predictions.shape == (N_STIMULI, 5)
    assert result.alphas.shape == result.alpha_index.shape == (5,)
    assert result.loo_mse.shape == (len(RELATIVE_ALPHAS), 5)
    single = fit_ridge_loo(kernel, targets[:, 2], alphas)
    np.testing.assert_allclose(single.predictions[:, 0], result.predictions[:, 2], atol=1e-12)


def test_predictions_follow_stimulus_order_and_kernel_scale():
    features, targets = _problem(7, 9)
    kernel = features @ features.T
    result = fit_ridge_loo(kernel, targets, relative_alpha_grid(kernel, RELATIVE_ALPHAS))
    order = np.random.default_rng(8).permutation(N_STIMULI)
    permuted_kernel = kernel[np.ix_(order, order)]
    permuted = fit_ridge_loo(permuted_kernel, targets[order], relative_alpha_grid(permuted_kernel, RELATIVE_ALPHAS))
    np.testing.assert_allclose(permuted.predictions, result.predictions[order], atol=1e-9)
    scaled = fit_ridge_loo(7.0 * kernel, targets, relative_alpha_grid(7.0 * kernel, RELATIVE_ALPHAS))
    np.testing.assert_allclose(scaled.predictions, result.predictions, atol=1e-9)
    np.testing.assert_array_equal(scaled.alpha_index, result.alpha_index)


def test_constant_target_is_predicted_exactly():
    features, _ = _problem(9, 6)
    result = fit_ridge_loo(features @ features.T, np.full(N_STIMULI, 2.5), [0.1, 10.0])
    np.testing.assert_allclose(result.predictions, 2.5, atol=1e-12)


def test_centre_kernel_equals_kernel_of_centred_features():
    features, _ = _problem(10, 9)
    centred = features - features.mean(axis=0)
    np.testing.assert_allclose(centre_kernel(features @ features.T), centred @ centred.T, atol=1e-9)


def test_relative_alpha_grid_scales_by_mean_feature_variance():
    features, _ = _problem(11, 13)
    z = _standardise(features)
    # Standardised features: trace(Z Zᵀ) / n = number of features.
    np.testing.assert_allclose(relative_alpha_grid(z @ z.T, [0.5, 2.0]), [6.5, 26.0])
    centred = features - features.mean(axis=0)
    np.testing.assert_allclose(
        relative_alpha_grid(features @ features.T, [1.0]), [np.trace(centred @ centred.T) / N_STIMULI]
    )


def test_fit_ridge_loo_layers_matches_per_layer_fits():
    layers = [_problem(12, p)[0] for p in (3, 30)]
    _, targets = _problem(12, 5)
    kernels = np.stack([x @ x.T for x in layers])
    results = fit_ridge_loo_layers(kernels, targets, RELATIVE_ALPHAS)
    assert len(results) == 2
    for kernel, result in zip(kernels, results):
        expected = fit_ridge_loo(kernel, targets, relative_alpha_grid(kernel, RELATIVE_ALPHAS))
        np.testing.assert_array_equal(result.predictions, expected.predictions)
        np.testing.assert_array_equal(result.alphas, expected.alphas)


def test_fit_ridge_loo_layers_names_the_bad_layer():
    features, targets = _problem(13, 5)
    kernels = np.stack([features @ features.T, np.ones((N_STIMULI, N_STIMULI))])
    with pytest.raises(DataError, match="layer index 1: kernel: centred trace is 0"):
        fit_ridge_loo_layers(kernels, targets, RELATIVE_ALPHAS)
    with pytest.raises(ValueError, match="n_layers"):
        fit_ridge_loo_layers(kernels[0], targets, RELATIVE_ALPHAS)


def test_bad_inputs_raise():
    features, targets = _problem(14, 5)
    kernel = features @ features.T
    with pytest.raises(ValueError, match="must be positive"):
        fit_ridge_loo(kernel, targets, [1.0, 0.0])
    with pytest.raises(ValueError, match="must be positive"):
        relative_alpha_grid(kernel, [-1.0])
    with pytest.raises(ValueError, match="non-empty"):
        fit_ridge_loo(kernel, targets, [])
    with pytest.raises(ValueError, match="targets must be"):
        fit_ridge_loo(kernel, targets[:-1], [1.0])
    with pytest.raises(ValueError, match="square"):
        fit_ridge_loo(kernel[:, :-1], targets, [1.0])
    with pytest.raises(ValueError, match="at least 3 stimuli"):
        fit_ridge_loo(kernel[:2, :2], targets[:2], [1.0])
    bad_targets = targets.copy()
    bad_targets[4, 7] = np.nan
    with pytest.raises(DataError, match=r"targets: non-finite value at \(stimulus, target\) index \(4, 7\)"):
        fit_ridge_loo(kernel, bad_targets, [1.0])
    asymmetric = kernel.copy()
    asymmetric[0, 1] += 1.0
    with pytest.raises(DataError, match="not symmetric"):
        fit_ridge_loo(asymmetric, targets, [1.0])
    bad_kernel = kernel.copy()
    bad_kernel[2, 2] = np.inf
    with pytest.raises(DataError, match=r"kernel: non-finite value at index \(2, 2\)"):
        fit_ridge_loo(bad_kernel, targets, [1.0])


def test_pearson_columns_matches_scipy():
    rng = np.random.default_rng(15)
    a = rng.normal(size=(20, 6))
    b = a + rng.normal(scale=np.arange(1, 7), size=(20, 6))
    expected = [pearsonr(a[:, k], b[:, k])[0] for k in range(6)]
    np.testing.assert_allclose(pearson_columns(a, b), expected, atol=1e-12)
    np.testing.assert_allclose(pearson_columns(a, a), 1.0, atol=1e-12)
    np.testing.assert_allclose(pearson_columns(a, -3 * a + 1), -1.0, atol=1e-12)


def test_pearson_columns_errors_name_array_and_column():
    rng = np.random.default_rng(16)
    a, b = rng.normal(size=(10, 4)), rng.normal(size=(10, 4))
    b[:, 2] = 1.5
    with pytest.raises(DataError, match="second array: column index 2 is constant"):
        pearson_columns(a, b)
    a[3, 1] = np.nan
    with pytest.raises(DataError, match=r"first array: non-finite value at index \(3, 1\)"):
        pearson_columns(a, b)
    with pytest.raises(ValueError, match="equal shape"):
        pearson_columns(a, b[:, :3])
    with pytest.raises(ValueError, match="at least 2 samples"):
        pearson_columns(a[:1], b[:1])
