import numpy as np
import pytest
from sklearn.cross_decomposition import PLSRegression

from deepmouse.errors import DataError
from deepmouse.metrics.folds import stimulus_folds
import torch

from deepmouse.metrics.pls import SQUARING_MAX_ORDER, _top_eigenpairs, fit_pls_folds, fit_pls_predict

def _sklearn_pls(n_components):
    # scikit-learn's NIPALS stops when the squared change of the weights is below tol: run it to
    # convergence, so that "the same components" is a fact and not its tolerance.
    return PLSRegression(n_components, scale=False, tol=1e-24, max_iter=100_000)


def _standardise(features):
    return (features - features.mean(axis=0)) / features.std(axis=0)


def _problem(seed, n_stimuli=30, n_features=40, n_targets=6, rank=None):
    """Standardised correlated features with an offset, targets a noisy readout of a few of their directions."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n_stimuli, n_features)) @ rng.normal(size=(n_features, n_features)) + 3.0
    z = _standardise(features)
    readout = rng.normal(size=(n_features, rank or n_targets)) @ rng.normal(size=(rank or n_targets, n_targets))
    targets = 0.2 * z @ readout + rng.normal(size=(n_stimuli, n_targets)) + rng.normal(size=n_targets)
    return z, targets


@pytest.mark.parametrize("n_features", [4, 40, 300], ids=["p<A", "p~n", "p>>n"])
@pytest.mark.parametrize("n_components", [1, 3, 10])
def test_predictions_match_sklearn_pls_regression(n_features, n_components):
    z, targets = _problem(0, n_features=n_features)
    train, test = np.arange(6, 30), np.arange(6)
    expected_components = min(n_components, n_features)  # beyond the features' rank nothing is left to fit
    expected = _sklearn_pls(expected_components).fit(z[train], targets[train]).predict(z[test])
    ours = fit_pls_predict(z @ z.T, targets, train, test, n_components, device="cpu")
    np.testing.assert_allclose(ours, expected, atol=1e-6, rtol=0)


def test_single_target_matches_sklearn():
    z, targets = _problem(1, n_targets=1)
    train, test = np.arange(0, 30, 2), np.arange(1, 30, 2)
    expected = _sklearn_pls(4).fit(z[train], targets[train]).predict(z[test]).reshape(-1, 1)
    np.testing.assert_allclose(fit_pls_predict(z @ z.T, targets, train, test, 4, device="cpu"),
                               expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("n_targets", [SQUARING_MAX_ORDER - 1, SQUARING_MAX_ORDER + 7, 95],
                         ids=["squaring", "exact", "more than stimuli"])
def test_many_targets_match_sklearn_on_both_eigenpair_paths(n_targets):
    # r = min(training stimuli - 1, targets): up to SQUARING_MAX_ORDER the components' eigenpairs come
    # from the squaring, above it from LAPACK's top eigenpair. With more targets than stimuli the
    # fit's own Gram is factored at its rank (69 here).
    z, targets = _problem(4, n_stimuli=80, n_features=60, n_targets=n_targets, rank=4)
    train, test = np.arange(10, 80), np.arange(10)
    expected = _sklearn_pls(8).fit(z[train], targets[train]).predict(z[test])
    np.testing.assert_allclose(fit_pls_predict(z @ z.T, targets, train, test, 8, device="cpu"),
                               expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("order", [1, 2, 7, SQUARING_MAX_ORDER, SQUARING_MAX_ORDER + 1, 48, 119])
def test_top_eigenpairs_equal_the_full_eigendecomposition(order):
    # Up to SQUARING_MAX_ORDER by squaring, above it by LAPACK's top pair: both exact to rounding.
    rng = np.random.default_rng(order)
    roots = rng.normal(size=(20, order, order)) * rng.uniform(0.1, 10.0, size=(20, 1, 1))
    matrices = torch.as_tensor(roots @ roots.transpose(0, 2, 1))  # positive semi-definite
    value, vector = _top_eigenpairs(matrices)
    values, vectors = np.linalg.eigh(matrices.numpy())
    np.testing.assert_allclose(value.numpy(), values[:, -1], rtol=1e-12)
    alignment = np.abs(np.einsum("bi,bi->b", vector[..., 0].numpy(), vectors[:, :, -1]))
    np.testing.assert_allclose(alignment, 1.0, atol=1e-9)


def test_top_eigenpairs_of_near_ties_ties_and_zeros():
    # Top eigenvalues 1e-4 apart: their ratio to the 1,024th power is still 0.9, the residual check
    # sends the matrix to the exact eigensolver, and the pair is exact. A tie has no unique
    # eigenvector: any unit vector of the top eigenspace is a valid component. A zero matrix (rank
    # exhausted) gives 0.
    rotation = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))[0]
    near, tied = np.diag([2.0, 2.0 - 2e-4, 1.0, 0.5]), np.diag([2.0, 2.0, 1.0, 0.5])
    matrices = torch.as_tensor(np.stack([rotation @ near @ rotation.T, rotation @ tied @ rotation.T, np.zeros((4, 4))]))
    value, vector = _top_eigenpairs(matrices)
    np.testing.assert_allclose(value.numpy(), [2.0, 2.0, 0.0], atol=1e-12)
    v = vector[..., 0].numpy()
    assert np.isfinite(v).all()
    np.testing.assert_allclose(np.abs(v[0] @ rotation[:, 0]), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(v[:2], axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(matrices[1].numpy() @ v[1], 2.0 * v[1], atol=1e-12)


def test_a_matrix_without_a_top_eigenpair_is_an_error_naming_its_order():
    # Non-finite values (never produced from finite kernels) make LAPACK return no pair: an error,
    # not a NaN component.
    matrices = torch.eye(SQUARING_MAX_ORDER + 1, dtype=torch.float64).repeat(2, 1, 1)
    matrices[1, 3, 2] = float("nan")
    with pytest.raises(np.linalg.LinAlgError, match=rf"no top eigenpair of a {SQUARING_MAX_ORDER + 1} x "):
        _top_eigenpairs(matrices)


def test_top_eigenpairs_of_rounding_noise_are_finite():
    # Once the rank is exhausted, S_k = Lᵀ K_k L is rounding noise: neither symmetric nor definite.
    # The traces of its powers can then be negative or zero and the scaled powers overflow; such a
    # matrix must go to the exact eigensolver (a finite eigenpair near 0, left out by the rank
    # tolerance), not pass the residual check as NaN (measured on an AMD EPYC: PLS predictions all NaN).
    rng = np.random.default_rng(5)
    skew = rng.normal(size=(6, 6)) * 1e-14
    noise = np.stack([skew - skew.T, np.array([[0.0, 1e-14], [-1e-14, 0.0]]).repeat(3, 0).repeat(3, 1)])
    value, vector = _top_eigenpairs(torch.as_tensor(noise))
    assert np.isfinite(value.numpy()).all() and np.isfinite(vector.numpy()).all()
    assert (np.abs(value.numpy()) < 1e-12).all()


def test_centring_uses_the_training_means_only():
    """An offset added to the test stimuli's features moves the prediction as sklearn's does."""
    z, targets = _problem(2)
    z = z.copy()
    train, test = np.arange(8, 30), np.arange(8)
    z[test] += 1.5
    expected = _sklearn_pls(3).fit(z[train], targets[train]).predict(z[test])
    np.testing.assert_allclose(fit_pls_predict(z @ z.T, targets, train, test, 3, device="cpu"),
                               expected, atol=1e-6, rtol=0)


def _brute_force_folds(z, targets, folds, rng, components, inner_folds):
    """scikit-learn refitted for every inner split and component count, then on the outer training part."""
    n = z.shape[0]
    scores = np.empty((len(folds), targets.shape[1]))
    errors = np.empty_like(scores)
    chosen = []
    for f, test in enumerate(folds):
        train = np.setdiff1d(np.arange(n), test)
        inner = stimulus_folds(train.size, inner_folds, 1, rng)
        squared = np.zeros((len(components), train.size, targets.shape[1]))
        for a, n_components in enumerate(components):
            for held in inner:
                fit_on, predict = np.delete(train, held), train[held]
                model = _sklearn_pls(n_components).fit(z[fit_on], targets[fit_on])
                squared[a, held] = (targets[predict] - model.predict(z[predict])) ** 2
        best = int(np.argmin(squared.sum(axis=(1, 2))))
        chosen.append(components[best])
        predicted = _sklearn_pls(components[best]).fit(z[train], targets[train]).predict(z[test])
        for j in range(targets.shape[1]):
            scores[f, j] = np.corrcoef(predicted[:, j], targets[test, j])[0, 1]
        errors[f] = squared[best].mean(axis=0) / targets[train].var(axis=0)
    return scores, np.array(chosen), errors


# 36 stimuli: every fold and inner fold holds out 9. 37: folds of 10 and 9 and inner folds of 9 and 8,
# so the shorter held-out sets are padded in the fits' held-out rows. 45 targets: more than stimuli,
# so each fit's Gram of the responses is factored at its own rank.
@pytest.mark.parametrize("n_stimuli, n_targets", [(36, 5), (37, 5), (37, 45)])
def test_folds_match_a_brute_force_sklearn_loop(n_stimuli, n_targets):
    z, targets = _problem(3, n_stimuli=n_stimuli, n_features=50, n_targets=n_targets, rank=2)
    folds = stimulus_folds(n_stimuli, 4, 1, np.random.default_rng(0))
    components = [1, 2, 4, 8]
    scores, chosen, errors = _brute_force_folds(z, targets, folds, np.random.default_rng(7), components, 3)
    result = fit_pls_folds((z @ z.T)[None], targets, folds, np.random.default_rng(7), components=components,
                           inner_folds=3, device="cpu", chunk_size=2)
    np.testing.assert_array_equal(result.fold_components[:, 0], chosen)
    np.testing.assert_allclose(result.fold_scores[:, 0], scores, atol=1e-6)
    np.testing.assert_allclose(result.fold_errors[:, 0], errors, atol=1e-6)


def test_layers_are_fitted_independently_and_in_any_grouping(monkeypatch):
    z, targets = _problem(4)
    other, _ = _problem(5)
    kernels = np.stack([z @ z.T, other @ other.T, z @ z.T])
    folds = stimulus_folds(30, 3, 1, np.random.default_rng(1))
    together = fit_pls_folds(kernels, targets, folds, np.random.default_rng(2), components=[2, 5], inner_folds=3,
                             device="cpu")
    import deepmouse.metrics.pls as pls
    monkeypatch.setattr(pls, "FITS_PER_GROUP", 1)  # one layer at a time
    alone = fit_pls_folds(kernels, targets, folds, np.random.default_rng(2), components=[2, 5], inner_folds=3,
                          device="cpu", chunk_size=1)
    np.testing.assert_allclose(together.fold_scores, alone.fold_scores, atol=1e-10)
    np.testing.assert_allclose(together.fold_errors, alone.fold_errors, atol=1e-10)
    np.testing.assert_array_equal(together.fold_components, alone.fold_components)
    np.testing.assert_allclose(together.fold_scores[:, 0], together.fold_scores[:, 2], atol=1e-10)


def test_null_responses_score_near_zero():
    """Responses independent of the features: held-out r within folds is centred on 0."""
    rng = np.random.default_rng(6)
    n = 119
    layers = [_standardise(rng.normal(size=(n, p))) for p in (20, 200)]
    kernels = np.stack([x @ x.T for x in layers])
    targets = rng.normal(size=(n, 100))
    folds = stimulus_folds(n, 10, 1, np.random.default_rng(0))
    result = fit_pls_folds(kernels, targets, folds, np.random.default_rng(1), components=[1, 3, 10], device="cpu")
    means = result.fold_scores.mean(axis=0)  # (layers, targets)
    standard_error = means.std() / np.sqrt(means.size)
    assert abs(means.mean()) < 4 * standard_error + 0.01



def test_null_responses_score_near_zero_at_many_components():
    """The same null with 10 components in every fit: each component fits more of the training
    part's noise, so anything of the held-out responses that reached the components shows as a
    positive mean (a fit's responses root left unmasked on its held-out stimuli gave +0.029)."""
    means = []
    for seed in range(3):
        rng = np.random.default_rng(6 + seed)
        n = 119
        layers = [_standardise(rng.normal(size=(n, p))) for p in (20, 200)]
        targets = rng.normal(size=(n, 100))
        folds = stimulus_folds(n, 10, 1, np.random.default_rng(0))
        result = fit_pls_folds(np.stack([x @ x.T for x in layers]), targets, folds, np.random.default_rng(1),
                               components=[10], device="cpu")
        means.append(result.fold_scores.mean(axis=0))
    assert abs(np.mean(means)) < 0.02  # -0.008 here, standard error about 0.005

def test_planted_low_rank_readout_is_recovered():
    """Neurons = rank-3 readout of layer 1 + noise: high held-out r there, lower on the other layers."""
    rng = np.random.default_rng(8)
    n = 119
    layers = [_standardise(rng.normal(size=(n, 40))) for _ in range(3)]
    signal = layers[1] @ rng.normal(size=(40, 3)) @ rng.normal(size=(3, 60))
    signal = signal / signal.std()
    targets = signal + 0.5 * rng.normal(size=(n, 60))
    folds = stimulus_folds(n, 10, 1, np.random.default_rng(0))
    result = fit_pls_folds(np.stack([x @ x.T for x in layers]), targets, folds, np.random.default_rng(1),
                           components=[1, 3, 10], device="cpu")
    per_layer = result.fold_scores.mean(axis=(0, 2))
    # The truth's own held-out r (the planted signal itself as the prediction, same folds): 0.848.
    # Exact PLS comes within 0.04 of it (0.810); extraction with K P L left undeflated gave 0.776.
    truth = np.mean([np.corrcoef(signal[fold, j], targets[fold, j])[0, 1] for fold in folds for j in range(60)])
    assert truth - 0.05 < per_layer[1] <= truth
    assert max(per_layer[0], per_layer[2]) < 0.2
    # The training-part errors, which cv layer selection uses, point at the same layer.
    assert np.argmin(result.fold_errors.mean(axis=(0, 2))) == 1
    assert np.all(result.fold_components[:, 1] >= 3)


def test_components_capped_by_the_inner_training_size():
    z, targets = _problem(9, n_stimuli=24)
    folds = stimulus_folds(24, 4, 1, np.random.default_rng(0))
    result = fit_pls_folds((z @ z.T)[None], targets, folds, np.random.default_rng(0), components=[50],
                           inner_folds=2, device="cpu")
    assert np.all(result.fold_components == 8)  # 18 training stimuli, 9 in each inner training part


def test_constant_responses_give_zero_scores():
    z, _ = _problem(10)
    targets = np.ones((30, 2))
    folds = stimulus_folds(30, 3, 1, np.random.default_rng(0))
    result = fit_pls_folds((z @ z.T)[None], targets, folds, np.random.default_rng(0), components=[2], inner_folds=3,
                           device="cpu")
    np.testing.assert_array_equal(result.fold_scores, 0.0)


def test_errors_name_what_is_wrong():
    z, targets = _problem(11)
    kernel = z @ z.T
    folds = stimulus_folds(30, 3, 1, np.random.default_rng(0))
    rng = np.random.default_rng(0)
    bad = np.stack([kernel, kernel])
    bad[1, 2, 3] = np.nan
    with pytest.raises(DataError, match="layer index 1: kernel: non-finite"):
        fit_pls_folds(bad, targets, folds, rng, device="cpu")
    broken = targets.copy()
    broken[4, 1] = np.inf
    with pytest.raises(DataError, match=r"targets: non-finite value at \(stimulus, target\) index \(4, 1\)"):
        fit_pls_folds(kernel[None], broken, folds, rng, device="cpu")
    with pytest.raises(ValueError, match="components: need positive integers"):
        fit_pls_folds(kernel[None], targets, folds, rng, components=[0, 5], device="cpu")
    with pytest.raises(ValueError, match="components: need positive integers"):
        fit_pls_folds(kernel[None], targets, folds, rng, components=[2.5], device="cpu")
    with pytest.raises(ValueError, match="inner_folds: need an integer of at least 2"):
        fit_pls_folds(kernel[None], targets, folds, rng, inner_folds=1, device="cpu")
    with pytest.raises(ValueError, match="inner_folds: 8 inner folds of 20 training stimuli"):
        fit_pls_folds(kernel[None], targets, folds, rng, inner_folds=8, device="cpu")
    with pytest.raises(ValueError, match="n_components: need 1..19 for 20 training stimuli, got 20"):
        fit_pls_predict(kernel, targets, np.arange(20), np.arange(20, 30), 20, device="cpu")
    with pytest.raises(ValueError, match="train and test must be disjoint"):
        fit_pls_predict(kernel, targets, np.arange(20), np.arange(19, 30), 2, device="cpu")
