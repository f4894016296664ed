import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.preprocessing import StandardScaler
from sklearn.random_projection import SparseRandomProjection, johnson_lindenstrauss_min_dim
from torch import nn

from deepmouse.errors import DataError
from deepmouse.features.hooks import hooked_leaf_outputs
from deepmouse.features.layers import capture_layer_outputs
from deepmouse.features.products import gram_and_row_sums, layer_statistics, standardised_kernel, symmetric_product
from deepmouse.features.stats import (
    LAYER_COLUMNS,
    LayerStatistics,
    compute_layer_statistics,
    enumerate_layers,
    sparse_random_projection,
    srp_dimension,
)
from deepmouse.models.build import build_model
from deepmouse.models.registry import load_zoo


def _inputs(n=8, size=64, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _reference_kernel(x):
    """Z Zᵀ by an explicit loop over features, constant features skipped."""
    kernel = np.zeros((x.shape[0], x.shape[0]))
    for column in x.T:
        if column.max() == column.min():
            continue
        z = (column - column.mean()) / column.std()
        kernel += np.outer(z, z)
    return kernel


def _reference_statistics(model, inputs):
    """Store every leaf output in float64, deduplicate exactly, compute G, s, K directly."""
    outputs = []

    def store(name, module, tensor):
        flat = tensor.detach().reshape(len(inputs), -1).double().cpu().numpy().copy()
        outputs.append((name, type(module).__name__, flat))

    with torch.inference_mode(), hooked_leaf_outputs(model, store):
        model(inputs)
    kept = []
    for name, module_type, x in outputs:
        # A duplicate holds the same values for every stimulus, whatever the feature order.
        if any(x.shape == other.shape and np.array_equal(np.sort(x, axis=1), np.sort(other, axis=1))
               for _, _, other in kept):
            continue
        kept.append((name, module_type, x))
    names = [name for name, _, _ in kept]
    gram = np.stack([x @ x.T for _, _, x in kept])
    row_sums = np.stack([x.sum(axis=1) for _, _, x in kept])
    scaled = [StandardScaler().fit_transform(x) for _, _, x in kept]
    kernel = np.stack([z @ z.T for z in scaled])
    n_kept = [int((x.max(axis=0) != x.min(axis=0)).sum()) for _, _, x in kept]
    rdms = np.stack([1.0 - np.corrcoef(x) for _, _, x in kept])
    return names, gram, row_sums, kernel, n_kept, rdms


def _assert_close(actual, expected, rtol=1e-5):
    scale = np.abs(expected).max(axis=(-2, -1), keepdims=True) if expected.ndim == 3 else np.abs(expected).max()
    np.testing.assert_array_less(np.abs(actual - expected), rtol * np.abs(expected) + rtol * scale + 1e-300)


@pytest.mark.parametrize("model_id", ["alexnet_random", "resnet18_random"])
def test_hook_statistics_equal_direct_computation_on_stored_activations(model_id):
    model = build_model(load_zoo().get(model_id), init_seed=0)
    inputs = _inputs()
    stats = compute_layer_statistics(model, inputs, "cpu")
    names, gram, row_sums, kernel, n_kept, rdms = _reference_statistics(model, inputs)
    assert stats.layers["layer_name"].tolist() == names
    assert stats.layers["n_kept"].tolist() == n_kept
    assert stats.gram.dtype == stats.kernel.dtype == stats.row_sums.dtype == stats.centred_gram.dtype == np.float64
    _assert_close(stats.gram, gram)
    _assert_close(stats.kernel, kernel)
    p = stats.n_features[:, None, None]
    _assert_close(stats.centred_gram, gram - row_sums[:, :, None] * row_sums[:, None, :] / p)
    np.testing.assert_allclose(stats.row_sums, row_sums, rtol=1e-6, atol=1e-6 * np.abs(row_sums).max())
    for name in ("gram", "centred_gram", "kernel"):  # stored as upper triangles
        np.testing.assert_array_equal(getattr(stats, name), getattr(stats, name).transpose(0, 2, 1))
    assert stats.usable_layers().all()
    np.testing.assert_allclose(stats.correlation_rdms(), rdms, rtol=0, atol=1e-6)
    assert stats.n_stimuli == 8 and stats.n_layers == len(names)


def test_dropout_and_flatten_of_alexnet_are_deduplicated():
    model = build_model(load_zoo().get("alexnet_random"), init_seed=0)
    names = compute_layer_statistics(model, _inputs(n=4), "cpu").layers["layer_name"].tolist()
    assert "classifier.0" not in names  # dropout in eval repeats the pooled features
    assert names[:3] == ["features.0", "features.1", "features.2"] and names[-1] == "classifier.6"


def test_standardised_kernel_matches_a_feature_loop_and_standard_scaler():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(9, 12)).astype(np.float32)
    x[:, 3] = 0.1                                  # constant whose float32 mean is not exactly 0.1
    x[:, 5] = 0.0
    x[:, 7] = 1000.0 + rng.normal(scale=0.01, size=9).astype(np.float32)  # large offset, small spread
    kernel, n_kept = standardised_kernel(torch.from_numpy(x))
    x64 = x.astype(np.float64)
    assert n_kept == 10
    np.testing.assert_allclose(kernel.numpy(), _reference_kernel(x64), rtol=1e-5, atol=1e-5)
    scaled = StandardScaler().fit_transform(x64)
    np.testing.assert_allclose(kernel.numpy(), scaled @ scaled.T, rtol=1e-5, atol=1e-5)


def test_kernel_of_only_constant_features_is_zero():
    kernel, n_kept = standardised_kernel(torch.full((4, 6), 3.3))
    assert n_kept == 0 and not kernel.any()


@pytest.mark.parametrize("chunk_features", [1, 3, 7, 1000, None])
def test_chunking_does_not_change_the_statistics(chunk_features):
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(6, 20)).astype(np.float32))
    x[:, 4] = 2.0
    x64 = x.double().numpy()
    gram, row_sums = gram_and_row_sums(x, chunk_features)
    # G is put together from products of centred values: good to its scale, not entrywise.
    np.testing.assert_allclose(gram.numpy(), x64 @ x64.T, rtol=1e-6, atol=1e-6 * np.abs(x64 @ x64.T).max())
    np.testing.assert_allclose(row_sums.numpy(), x64.sum(axis=1), rtol=1e-6, atol=1e-6 * np.abs(x64).sum(axis=1).max())
    kernel, n_kept = standardised_kernel(x, chunk_features)
    assert n_kept == 19
    np.testing.assert_allclose(kernel.numpy(), _reference_kernel(x64), rtol=1e-5, atol=1e-5)
    combined = layer_statistics(x, chunk_features)
    np.testing.assert_array_equal(combined.gram.numpy(), gram.numpy())
    np.testing.assert_array_equal(combined.row_sums.numpy(), row_sums.numpy())
    np.testing.assert_array_equal(combined.kernel.numpy(), kernel.numpy())
    assert combined.n_kept == n_kept
    centred = x64 - x64.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(combined.centred_gram.numpy(), centred @ centred.T, rtol=1e-6,
                               atol=1e-6 * np.abs(centred @ centred.T).max())


@pytest.mark.parametrize("n_rows", [5, 96, 120, 239])
def test_symmetric_product_equals_the_full_product(n_rows):
    rows = torch.randn(n_rows, 301, generator=torch.Generator().manual_seed(n_rows))
    product = symmetric_product(rows)
    assert product.dtype == torch.float64
    expected = rows.double() @ rows.double().T
    np.testing.assert_allclose(product.numpy(), expected.numpy(), rtol=1e-5, atol=1e-4)
    assert torch.equal(product, product.T)


def test_chunk_size_must_be_positive():
    with pytest.raises(ValueError, match="chunk_features must be positive, got 0"):
        gram_and_row_sums(torch.zeros(2, 3), 0)


def test_kernel_is_invariant_to_feature_scale_and_offset():
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.normal(size=(7, 30)).astype(np.float32))
    scale = torch.from_numpy(rng.uniform(0.1, 10, size=30).astype(np.float32))
    kernel, _ = standardised_kernel(x)
    shifted, _ = standardised_kernel(x * scale + 5.0)
    np.testing.assert_allclose(shifted.numpy(), kernel.numpy(), rtol=1e-4, atol=1e-4)
    # Z has zero-mean columns, so K's rows sum to zero and its trace is n_kept * n_stimuli.
    np.testing.assert_allclose(kernel.numpy().sum(axis=1), 0, atol=1e-4)
    assert kernel.numpy().trace() == pytest.approx(30 * 7, rel=1e-5)


class TransposedIdentity(nn.Module):
    """A convolution whose output is reordered before an identity norm, as timm's patch embedding."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, 4, 2, stride=2)
        self.norm = nn.Identity()

    def forward(self, x):
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


def test_repeated_outputs_are_skipped_even_when_reordered():
    torch.manual_seed(0)
    model = nn.Sequential(TransposedIdentity(), nn.Dropout(0.2), nn.Flatten(), nn.ReLU(), nn.ReLU(),
                          nn.Linear(64, 5)).eval()
    reported = []
    stats = compute_layer_statistics(model, _inputs(n=6, size=8), "cpu", on_layer=reported.append)
    assert stats.layers["layer_name"].tolist() == ["0.proj", "3", "5"]
    assert reported == ["0.proj", "0.norm", "1", "2", "3", "4", "5"]
    np.testing.assert_allclose(stats.layers["depth"], [0.0, 0.5, 1.0])
    assert stats.layers["layer_index"].tolist() == [0, 1, 2]


def test_batch_norm_at_initialisation_is_a_layer_of_its_own():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    stats = compute_layer_statistics(model, _inputs(n=5, size=6), "cpu")
    assert stats.layers["module_type"].tolist() == ["Conv2d", "BatchNorm2d"]


def test_a_single_layer_has_depth_zero():
    stats = compute_layer_statistics(nn.Linear(3, 2), torch.randn(4, 3), "cpu")
    assert stats.layers.to_dict("records") == [{"layer_index": 0, "layer_name": "Linear", "module_type": "Linear",
                                               "n_features": 2, "n_kept": 2, "depth": 0.0}]


def test_non_finite_outputs_name_the_layer():
    class Overflow(nn.Module):
        def forward(self, x):
            return x * float("inf")

    model = nn.Sequential(nn.Linear(3, 3), Overflow())
    with pytest.raises(DataError, match=r"layer '1' \(Overflow\): output holds NaN or inf"):
        compute_layer_statistics(model, torch.randn(4, 3), "cpu")


def test_outputs_without_a_stimulus_axis_are_skipped_with_a_warning():
    class Summary(nn.Module):
        def forward(self, x):
            return x, x.mean(dim=0)

    model = nn.Sequential(nn.Linear(3, 6), Summary())
    with pytest.warns(UserWarning,
                      match=r"1 outputs without per-stimulus rows .* were not used as layers: \['1\[1\]'\]"):
        stats = compute_layer_statistics(model, torch.randn(4, 3), "cpu")
    assert stats.layers["layer_name"].tolist() == ["0"]


class Windows(nn.Module):
    """A linear map on each 2 x 2 window of every stimulus, the windows folded into the batch (as Swin's attention).

    ``stimulus_major`` folds (stimulus, window) as Swin does; otherwise window-major.
    """

    def __init__(self, stimulus_major):
        super().__init__()
        self.proj = nn.Linear(3, 5)
        self.stimulus_major = stimulus_major

    @staticmethod
    def windows(x):
        """(n, 3, 4, 4) to (n, 4 windows, 4 pixels, 3 channels)."""
        n = x.shape[0]
        return x.reshape(n, 3, 2, 2, 2, 2).permute(0, 2, 4, 3, 5, 1).reshape(n, 4, 4, 3)

    def forward(self, x):
        windows = self.windows(x)
        if not self.stimulus_major:
            windows = windows.transpose(0, 1)
        return self.proj(windows.reshape(-1, 4, 3)).sum()


def test_windows_folded_stimulus_major_are_layers_equal_to_a_per_stimulus_loop():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 3, 1), Windows(stimulus_major=True)).eval()
    inputs = _inputs(n=6, size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = compute_layer_statistics(model, inputs, "cpu")
    assert stats.layers["layer_name"].tolist() == ["0", "1.proj"]
    assert stats.layers["n_features"].tolist() == [48, 80]
    with torch.no_grad():
        convolved = model[0](inputs)
        rows = [model[1].proj(Windows.windows(convolved[i:i + 1])[0]).reshape(-1).double().numpy()
                for i in range(len(inputs))]
    x = np.stack(rows)
    _assert_close(stats.gram[1], x @ x.T)
    np.testing.assert_allclose(stats.row_sums[1], x.sum(axis=1), rtol=1e-5, atol=1e-5)
    scaled = StandardScaler().fit_transform(x)
    _assert_close(stats.kernel[1], scaled @ scaled.T)
    np.testing.assert_allclose(capture_layer_outputs(model, inputs, ["1.proj"])["1.proj"], x, rtol=1e-5, atol=1e-6)


def test_windows_folded_in_another_order_are_skipped_with_a_warning():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 3, 1), Windows(stimulus_major=False)).eval()
    with pytest.warns(UserWarning, match=r"1 outputs without per-stimulus rows .* not stimulus-major.*\['1.proj'\]"):
        stats = compute_layer_statistics(model, _inputs(n=6, size=4), "cpu")
    assert stats.layers["layer_name"].tolist() == ["0"]


def test_inputs_must_be_a_batch():
    with pytest.raises(DataError, match=r"model inputs: expected a batch of shape \(n_stimuli, ...\), got \(3,\)"):
        compute_layer_statistics(nn.Linear(3, 2), torch.zeros(3), "cpu")


def test_enumerate_layers_is_the_statistics_table_without_n_kept():
    model = build_model(load_zoo().get("alexnet_random"), init_seed=0)
    inputs = _inputs(n=4)
    expected = compute_layer_statistics(model, inputs, "cpu").layers.drop(columns="n_kept")
    pd.testing.assert_frame_equal(enumerate_layers(model, inputs, "cpu"), expected)


def test_srp_dimension_is_the_johnson_lindenstrauss_bound():
    assert srp_dimension(119) == 4096
    assert srp_dimension(8) == johnson_lindenstrauss_min_dim(8, eps=0.1)


def test_sparse_random_projection_equals_scikit_learn():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(10, 3000)).astype(np.float32)
    projected = sparse_random_projection(torch.from_numpy(x), 50, seed=7)
    expected = SparseRandomProjection(n_components=50, random_state=7).fit_transform(x.astype(np.float64))
    np.testing.assert_allclose(projected.numpy(), expected, rtol=1e-4, atol=1e-4)
    assert projected.shape == (10, 50) and projected.dtype == torch.float32


def test_statistics_with_srp_are_those_of_the_projected_layers():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                          nn.Linear(128, 10)).eval()
    inputs = _inputs(n=8, size=32)
    k = srp_dimension(8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = compute_layer_statistics(model, inputs, "cpu", srp_seed=5)
    assert stats.layers["n_features"].tolist() == [k, k, 128, 10]
    with torch.no_grad():
        conv = model[0](inputs).reshape(8, -1).numpy()
    projected = SparseRandomProjection(n_components=k, random_state=5).fit_transform(conv.astype(np.float64))
    _assert_close(stats.gram[0], projected @ projected.T, rtol=1e-4)
    np.testing.assert_allclose(stats.row_sums[0], projected.sum(axis=1), rtol=1e-4, atol=1e-3)


def _valid_parts(n_layers=2, n=3):
    layers = pd.DataFrame({"layer_index": range(n_layers), "layer_name": ["a", "b"][:n_layers],
                           "module_type": "Linear", "n_features": 4, "n_kept": 4,
                           "depth": np.linspace(0, 1, n_layers)})
    square = np.zeros((n_layers, n, n))
    return dict(layers=layers, gram=square, row_sums=np.zeros((n_layers, n)), kernel=square.copy())


@pytest.mark.parametrize("change, message", [
    (lambda p: p.update(layers=p["layers"].drop(columns="n_kept")), "layer table columns must be"),
    (lambda p: p.update(gram=np.zeros((3, 3, 3))), r"gram must have shape \(2, n, n\)"),
    (lambda p: p.update(row_sums=np.zeros((2, 4))), r"row_sums must have shape \(2, 3\)"),
    (lambda p: p.update(kernel=np.zeros((2, 4, 4))), r"kernel must have shape \(2, 3, 3\)"),
    (lambda p: p.update(kernel=np.zeros((2, 3, 3), dtype=np.float32)), "kernel must be float64"),
    (lambda p: p.update(centred_gram=np.zeros((2, 4, 4))), r"centred_gram must have shape \(2, 3, 3\)"),
    (lambda p: p.update(centred_gram=np.zeros((2, 3, 3), dtype=np.float32)), "centred_gram must be float64"),
    (lambda p: p.update(layers=p["layers"].assign(layer_index=[1, 0])), "layer_index must run 0..n_layers-1"),
])
def test_layer_statistics_validates_its_parts(change, message):
    parts = _valid_parts()
    LayerStatistics(**parts)
    change(parts)
    with pytest.raises(DataError, match=message):
        LayerStatistics(**parts)


def test_centred_gram_defaults_to_the_gram_identity_for_float64_statistics():
    x = np.random.default_rng(5).normal(size=(2, 6, 9)) + 3.0
    parts = _valid_parts(n=6)
    parts["layers"]["n_features"] = 9
    parts.update(gram=np.einsum("lip,ljp->lij", x, x), row_sums=x.sum(axis=2))
    stats = LayerStatistics(**parts)
    centred = x - x.mean(axis=2, keepdims=True)
    np.testing.assert_allclose(stats.centred_gram, np.einsum("lip,ljp->lij", centred, centred), atol=1e-12)
    np.testing.assert_allclose(stats.correlation_rdms([1]), [1.0 - np.corrcoef(x[1])], atol=1e-12)


def test_layer_statistics_columns_and_n_features():
    stats = LayerStatistics(**_valid_parts())
    assert tuple(stats.layers.columns) == LAYER_COLUMNS
    np.testing.assert_array_equal(stats.n_features, [4, 4])


def test_tf32_is_off_while_reducing_and_restored_after():
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
            return x

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    compute_layer_statistics(Probe(), torch.randn(3, 2), "cpu")
    assert seen == [(False, False)]
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("model_id", ["alexnet_random", "resnet18_random"])
def test_cuda_statistics_equal_direct_computation_and_cpu_statistics(model_id, monkeypatch):
    model = build_model(load_zoo().get(model_id), init_seed=0)
    inputs = _inputs()
    on_cpu = compute_layer_statistics(model, inputs, "cpu")
    on_cuda = compute_layer_statistics(model, inputs, "cuda")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    names, gram, row_sums, kernel, _, rdms = _reference_statistics(model.cuda(), inputs.cuda())
    assert on_cuda.layers["layer_name"].tolist() == names == on_cpu.layers["layer_name"].tolist()
    _assert_close(on_cuda.gram, gram)
    _assert_close(on_cuda.kernel, kernel)
    _assert_close(on_cuda.gram, on_cpu.gram, rtol=1e-4)
    _assert_close(on_cuda.kernel, on_cpu.kernel, rtol=1e-4)
    np.testing.assert_allclose(on_cuda.correlation_rdms(), rdms, rtol=0, atol=1e-6)


class Emit(nn.Module):
    """A one-layer model whose output is a fixed activation matrix, whatever the inputs."""

    def __init__(self, activations):
        super().__init__()
        self.register_buffer("activations", activations)

    def forward(self, inputs):
        return self.activations.clone()


def _structured_features(rng, n_stimuli=119, n_features=3000, sd=1.4):
    """Features of sd ~``sd`` with correlated stimuli (a low-rank part plus noise), so the RDM has a spread."""
    latent = rng.normal(size=(n_stimuli, 5)) @ rng.normal(size=(5, n_features)) / np.sqrt(5)
    values = latent + 0.7 * rng.normal(size=(n_stimuli, n_features))
    return sd * values / values.std()


def _common_offset(rng, factor):
    return _structured_features(rng) + factor * 1.4


def _outlier_features(rng):
    values = _structured_features(rng)
    values[:, [5, 777, 2048]] *= 1e3
    return values


def _massive_activations(rng):
    """A few features near 1e3 x the rest, nearly constant over stimuli (as trained transformers have)."""
    values = _structured_features(rng)
    values[:, [11, 1500, 2999]] += np.array([1.4e3, -2.1e3, 1.2e3])
    return values


def _per_feature_offsets(rng):
    offsets = rng.choice([-1, 1], size=3000) * 1.4 * 10 ** rng.uniform(0, 4, size=3000)
    return _structured_features(rng) + offsets


@pytest.mark.parametrize("make", [
    pytest.param(lambda rng: _common_offset(rng, 100), id="common-offset-100sd"),
    pytest.param(lambda rng: _common_offset(rng, 1000), id="common-offset-1000sd"),
    pytest.param(lambda rng: _common_offset(rng, 1e4), id="common-offset-1e4sd"),
    pytest.param(_outlier_features, id="outlier-features-1e3x"),
    pytest.param(_massive_activations, id="massive-activations-1e3x"),
    pytest.param(_per_feature_offsets, id="per-feature-offsets-1-to-1e4sd"),
])
@pytest.mark.parametrize("chunk_features", [None, 701])
def test_correlation_rdms_are_exact_for_offsets_and_outliers(make, chunk_features):
    x = torch.from_numpy(make(np.random.default_rng(20)).astype(np.float32))
    stats = compute_layer_statistics(Emit(x), torch.zeros(len(x), 1), "cpu", chunk_features=chunk_features)
    expected = 1.0 - np.corrcoef(x.double().numpy())
    spread = np.ptp(expected[np.triu_indices(len(x), k=1)])
    assert stats.usable_layers().tolist() == [True]
    rdms = stats.correlation_rdms()
    assert rdms.shape == (1, 119, 119) and rdms.dtype == np.float64
    # Float32 products over 3,000 features: rounding alone reaches ~2e-6 of the spread on some CPUs
    # (outlier features dominate the norms; the kernels' summation order differs by instruction set).
    # The cancellation this guards against (G - s s^T / p at offsets of 1e4 sd) is orders larger.
    np.testing.assert_array_less(np.abs(rdms[0] - expected), 1e-5 * spread)


@pytest.mark.parametrize("make", [
    pytest.param(lambda rng: _common_offset(rng, 100), id="common-offset-100sd"),
    pytest.param(_massive_activations, id="massive-activations-1e3x"),
    pytest.param(lambda rng: np.maximum(_structured_features(rng), 0.0), id="relu"),
])
@pytest.mark.parametrize("constant", [0.0, 3.0])
def test_a_constant_stimulus_makes_the_layer_unusable(make, constant):
    x = make(np.random.default_rng(21)).astype(np.float32)
    x[7] = constant  # e.g. a blank that leaves a layer at zero
    stats = compute_layer_statistics(Emit(torch.from_numpy(x)), torch.zeros(len(x), 1), "cpu")
    assert stats.usable_layers().tolist() == [False]
    with pytest.raises(DataError, match="centred_gram: layer index 0, stimulus index 7 has .*constant activations"):
        stats.correlation_rdms()


def test_correlation_rdms_choose_layers_by_mask_or_index():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 40), nn.ReLU(), nn.Linear(40, 30)).eval()
    stats = compute_layer_statistics(model, torch.randn(9, 5) + 50.0, "cpu")
    every = stats.correlation_rdms()
    assert every.shape == (3, 9, 9)
    np.testing.assert_array_equal(stats.correlation_rdms(np.array([False, True, True])), every[1:])
    np.testing.assert_array_equal(stats.correlation_rdms(np.array([2, 0])), every[[2, 0]])


def _far_stimulus(make, scale):
    """``make``'s features with stimulus 7 replaced by small structured values, ``scale`` x their sd, near 0.

    The blank in deep layers of an untrained network: every other stimulus carries the
    layer's large per-feature values, the blank almost none of them.
    """
    def far(rng):
        values = make(rng)
        values[7] = scale * _structured_features(rng)[0]
        return values
    return far


@pytest.mark.parametrize("make", [
    pytest.param(lambda rng: _common_offset(rng, 1000), id="common-offset-1000sd"),
    pytest.param(_massive_activations, id="massive-activations-1e3x"),
    pytest.param(_per_feature_offsets, id="per-feature-offsets-1-to-1e4sd"),
    pytest.param(lambda rng: np.abs(_structured_features(rng)) * 1e3, id="large-positive"),
])
@pytest.mark.parametrize("scale", [1e-2, 1e-4])
@pytest.mark.parametrize("chunk_features", [None, 701])
def test_a_stimulus_near_zero_beside_large_activations_is_exact(make, scale, chunk_features):
    x = _far_stimulus(make, scale)(np.random.default_rng(22)).astype(np.float32)
    stats = compute_layer_statistics(Emit(torch.from_numpy(x)), torch.zeros(len(x), 1), "cpu",
                                     chunk_features=chunk_features)
    reference = x.astype(np.float64)
    expected = 1.0 - np.corrcoef(reference)
    spread = np.ptp(expected[np.triu_indices(len(x), k=1)])
    assert stats.usable_layers().tolist() == [True]
    np.testing.assert_array_less(np.abs(stats.correlation_rdms()[0] - expected), 1e-6 * spread)
    # G's diagonal is a squared norm, the blank's included, to float32 accuracy.
    gram = reference @ reference.T
    np.testing.assert_allclose(np.diagonal(stats.gram[0]), np.diagonal(gram), rtol=1e-6)
    np.testing.assert_allclose(stats.row_sums[0], reference.sum(axis=1), rtol=1e-5,
                               atol=1e-6 * np.sqrt(x.shape[1] * np.diagonal(gram)).max())
