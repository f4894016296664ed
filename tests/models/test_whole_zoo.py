"""Every architecture of the zoo builds untrained and yields layer statistics.

Trained rows share their architecture with an untrained row (checked in
test_registry.py) and their weights path is tested with self-made checkpoints in
test_build.py, so building every ``random`` row covers every architecture the
pipeline can run. Each model gets the input the default run gives it (``features.preprocessing:
paper``: 224 x 224, whatever the model's own input size), so a model that only ran at its
native size would fail here; forwarding at native sizes (``native`` mode) is tested on the
EfficientNet-Lite family at 224, 240 and 260 px (test_efficientnet_lite.py) and in
test_extract.py. Two scenes and the blank: the fewest stimuli whose standardised kernel is
not fixed by the feature count alone (with two stimuli every kept feature is +-1), and the
forward pass and the statistics scale with the stimuli. About 2 minutes (220 CPU s) on 2 CPU
cores: deselect with -m "not slow".
"""

import gc

import numpy as np
import pytest

from deepmouse.features.stats import compute_layer_statistics
from deepmouse.models.build import build_model
from deepmouse.models.preprocess import PAPER_SIZE, preprocess_stimuli
from deepmouse.models.registry import load_zoo

pytestmark = pytest.mark.slow

N_SCENES = 2
RANDOM_IDS = [entry.model_id for entry in load_zoo() if entry.is_random]


def _scenes_and_blank(seed):
    """(N_SCENES + 1, 48, 64) uint8: random scenes, then the uniform mean-gray blank."""
    rng = np.random.default_rng(seed)
    scenes = rng.integers(0, 256, size=(N_SCENES, 48, 64), dtype=np.uint8)
    blank = np.full((1, 48, 64), 127, dtype=np.uint8)
    return np.concatenate([scenes, blank])


@pytest.mark.parametrize("model_id", RANDOM_IDS)
def test_untrained_architecture_builds_and_yields_statistics(model_id):
    entry = load_zoo().get(model_id)
    model = build_model(entry, init_seed=0)
    try:
        inputs = preprocess_stimuli(_scenes_and_blank(seed=len(model_id)), "paper", entry)
        assert inputs.shape[1:] == (3, PAPER_SIZE, PAPER_SIZE)
        stats = compute_layer_statistics(model, inputs, "cpu")
    finally:
        del model
        gc.collect()
    n_stimuli = N_SCENES + 1
    assert stats.n_stimuli == n_stimuli and stats.n_layers >= 2
    assert np.isfinite(stats.gram).all() and np.isfinite(stats.row_sums).all() and np.isfinite(stats.kernel).all()
    depth = stats.layers["depth"].to_numpy()
    assert depth[0] == 0.0 and depth[-1] == 1.0
    assert ((depth >= 0.0) & (depth <= 1.0)).all() and (np.diff(depth) > 0).all()
    assert (stats.n_features > 0).all()
    # G is a Gram matrix: symmetric, its diagonal non-negative up to rounding; K likewise, with its
    # trace n_kept * n_stimuli because every kept feature is standardised to variance 1
    # (to float32 accuracy: the products sum up to millions of features in float32).
    np.testing.assert_allclose(stats.gram, stats.gram.transpose(0, 2, 1), rtol=1e-6, atol=1e-6)
    # G is assembled as S + s sᵀ / p, its diagonal non-negative to rounding even for a stimulus near
    # 0 beside others with huge activations (the blank in untrained EfficientNetV2-S), whose row of
    # S is recomputed from its own centred row. Every layer is then usable but one whose output
    # is the same for every stimulus (googlenet's untrained fc: no kernel, n_kept 0).
    scale = np.abs(stats.gram).max(axis=(1, 2))
    assert (np.diagonal(stats.gram, axis1=1, axis2=2) >= -1e-7 * scale[:, None]).all()
    varies = stats.layers["n_kept"].to_numpy() > 0
    unusable = stats.layers["layer_name"][stats.usable_layers() != varies].tolist()
    assert not unusable and varies.any(), unusable
    traces = np.trace(stats.kernel, axis1=1, axis2=2)
    np.testing.assert_allclose(traces, stats.layers["n_kept"].to_numpy() * n_stimuli, rtol=1e-3, atol=1e-6)
