import numpy as np
import pytest
from scipy.spatial.distance import pdist, squareform
from scipy.stats import pearsonr

from deepmouse.errors import DataError
from deepmouse.metrics.rdm import rdm_from_centred_gram, rdm_from_gram, rdm_from_responses, upper_triangle


def _responses(seed, n_stimuli=9, n_units=13):
    return np.random.default_rng(seed).normal(size=(n_stimuli, n_units))


def _loop_rdm(responses):
    n = responses.shape[0]
    rdm = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                rdm[i, j] = 1.0 - pearsonr(responses[i], responses[j])[0]
    return rdm


@pytest.mark.parametrize("n_units", [2, 5, 40])
def test_rdm_from_responses_matches_pairwise_pearson_loop(n_units):
    responses = _responses(0, n_units=n_units)
    np.testing.assert_allclose(rdm_from_responses(responses), _loop_rdm(responses), atol=1e-12)


def test_rdm_from_responses_matches_scipy_correlation_distance():
    responses = _responses(1)
    np.testing.assert_allclose(
        rdm_from_responses(responses), squareform(pdist(responses, metric="correlation")), atol=1e-12
    )


def test_rdm_properties():
    responses = _responses(2)
    rdm = rdm_from_responses(responses)
    assert rdm.dtype == np.float64
    np.testing.assert_array_equal(rdm, rdm.T)
    np.testing.assert_array_equal(np.diag(rdm), 0.0)
    assert rdm.min() >= 0.0 and rdm.max() <= 2.0
    # Correlation distance ignores each stimulus's offset and positive gain.
    rng = np.random.default_rng(3)
    rescaled = responses * rng.uniform(0.5, 4, size=(responses.shape[0], 1)) + rng.normal(size=(responses.shape[0], 1))
    np.testing.assert_allclose(rdm_from_responses(rescaled), rdm, atol=1e-12)


def test_permuting_stimuli_permutes_rdm():
    responses = _responses(4)
    order = np.random.default_rng(5).permutation(responses.shape[0])
    expected = rdm_from_responses(responses)[np.ix_(order, order)]
    np.testing.assert_allclose(rdm_from_responses(responses[order]), expected)


def test_permuting_units_leaves_rdm_unchanged():
    responses = _responses(6)
    order = np.random.default_rng(7).permutation(responses.shape[1])
    np.testing.assert_allclose(rdm_from_responses(responses[:, order]), rdm_from_responses(responses), atol=1e-14)


def test_identical_and_opposite_patterns():
    pattern = np.array([1.0, 2.0, 4.0, 3.0])
    rdm = rdm_from_responses(np.stack([pattern, 2 * pattern + 1, -pattern]))
    np.testing.assert_allclose(rdm, [[0, 0, 2], [0, 0, 2], [2, 2, 0]], atol=1e-14)


def test_constant_stimulus_raises_with_its_index():
    responses = _responses(8)
    responses[3] = 0.7
    with pytest.raises(DataError, match="stimulus index 3"):
        rdm_from_responses(responses)


def test_non_finite_responses_raise():
    responses = _responses(9)
    responses[2, 4] = np.nan
    with pytest.raises(DataError, match=r"non-finite value .* \(2, 4\)"):
        rdm_from_responses(responses)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="2-D"):
        rdm_from_responses(np.ones(5))
    with pytest.raises(DataError, match="at least 2 units"):
        rdm_from_responses(np.ones((5, 1)))


@pytest.mark.parametrize("n_features", [3, 9, 200])
def test_rdm_from_gram_equals_rdm_from_responses(n_features):
    rng = np.random.default_rng(10)
    # Positive activations far from zero make the Gram identity's cancellation realistic.
    features = np.abs(rng.normal(size=(9, n_features))) + 5.0
    expected = rdm_from_responses(features)
    computed = rdm_from_gram(features @ features.T, features.sum(axis=1), n_features)
    np.testing.assert_allclose(computed, expected, atol=1e-10, rtol=0)


def test_rdm_from_gram_batched_equals_per_layer():
    rng = np.random.default_rng(11)
    layers = [rng.normal(size=(7, p)) for p in (4, 30, 250)]
    grams = np.stack([x @ x.T for x in layers])
    row_sums = np.stack([x.sum(axis=1) for x in layers])
    n_features = np.array([x.shape[1] for x in layers])
    batched = rdm_from_gram(grams, row_sums, n_features)
    assert batched.shape == (3, 7, 7)
    for layer, features in enumerate(layers):
        np.testing.assert_allclose(batched[layer], rdm_from_responses(features), atol=1e-10, rtol=0)


def test_rdm_from_gram_constant_stimulus_raises_naming_layer_and_stimulus():
    rng = np.random.default_rng(12)
    features = rng.normal(size=(2, 6, 10))
    features[1, 4] = 2.5
    grams = np.einsum("lip,ljp->lij", features, features)
    with pytest.raises(DataError, match="layer index 1, stimulus index 4"):
        rdm_from_gram(grams, features.sum(axis=2), np.array([10, 10]))
    with pytest.raises(DataError, match="stimulus index 4"):
        rdm_from_gram(grams[1], features[1].sum(axis=1), 10)


def test_rdm_from_gram_rejects_bad_inputs():
    x = np.random.default_rng(13).normal(size=(5, 8))
    gram, sums = x @ x.T, x.sum(axis=1)
    with pytest.raises(ValueError, match="row_sums shape"):
        rdm_from_gram(gram, sums[:4], 8)
    with pytest.raises(ValueError, match="n_features shape"):
        rdm_from_gram(gram, sums, [8, 8])
    with pytest.raises(ValueError, match="at least 2"):
        rdm_from_gram(gram, sums, 1)
    with pytest.raises(ValueError, match="n_stimuli, n_stimuli"):
        rdm_from_gram(gram[:, :4], sums, 8)
    gram[0, 1] = np.inf
    with pytest.raises(DataError, match="gram: non-finite"):
        rdm_from_gram(gram, sums, 8)


def test_upper_triangle_matches_loop_and_batches():
    matrices = np.random.default_rng(14).normal(size=(2, 3, 5, 5))
    expected = np.array(
        [[[m[i, j] for i in range(5) for j in range(i + 1, 5)] for m in layer] for layer in matrices]
    )
    np.testing.assert_array_equal(upper_triangle(matrices), expected)
    assert upper_triangle(np.eye(4)).shape == (6,)
    with pytest.raises(ValueError, match=r"\(\.\.\., n, n\)"):
        upper_triangle(np.ones((3, 4)))


def _centred_gram(features):
    centred = features - features.mean(axis=-1, keepdims=True)
    return centred @ np.swapaxes(centred, -1, -2)


@pytest.mark.parametrize("n_features", [3, 9, 200])
def test_rdm_from_centred_gram_equals_rdm_from_responses(n_features):
    features = np.random.default_rng(15).normal(size=(9, n_features)) + 1e4  # no cancellation in S itself
    np.testing.assert_allclose(rdm_from_centred_gram(_centred_gram(features)), rdm_from_responses(features),
                               atol=1e-12, rtol=0)


def test_rdm_from_centred_gram_batched_equals_per_layer():
    rng = np.random.default_rng(16)
    layers = np.stack([rng.normal(size=(7, 30)), np.abs(rng.normal(size=(7, 30))) * 1e3])
    batched = rdm_from_centred_gram(_centred_gram(layers))
    assert batched.shape == (2, 7, 7) and batched.dtype == np.float64
    for layer, features in enumerate(layers):
        np.testing.assert_allclose(batched[layer], rdm_from_responses(features), atol=1e-12, rtol=0)
        np.testing.assert_array_equal(np.diagonal(batched[layer]), 0.0)


def test_rdm_from_centred_gram_raises_at_or_below_the_resolution():
    features = np.random.default_rng(17).normal(size=(2, 6, 10))
    centred = _centred_gram(features)
    resolution = np.full((2, 6), 1e-9)
    resolution[1, 4] = centred[1, 4, 4]
    rdm_from_centred_gram(centred[0], resolution[0])
    with pytest.raises(DataError, match="centred_gram: layer index 1, stimulus index 4 has .*constant activations"):
        rdm_from_centred_gram(centred, resolution)
    features[0, 2] = 5.0
    with pytest.raises(DataError, match="centred_gram: stimulus index 2"):
        rdm_from_centred_gram(_centred_gram(features[0]))


def test_rdm_from_centred_gram_rejects_bad_inputs():
    centred = _centred_gram(np.random.default_rng(18).normal(size=(5, 8)))
    with pytest.raises(ValueError, match=r"centred_gram must be \(\.\.\., n_stimuli, n_stimuli\)"):
        rdm_from_centred_gram(centred[:, :4])
    with pytest.raises(ValueError, match="resolution shape"):
        rdm_from_centred_gram(centred, np.zeros(4))
    centred[0, 1] = np.nan
    with pytest.raises(DataError, match=r"centred_gram: non-finite value .* \(0, 1\)"):
        rdm_from_centred_gram(centred)
