"""Tiny seeded data for the scoring tests: layer statistics from explicit activations,
neurons from known tuning plus trial noise."""

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler

from deepmouse.config import ScoringConfig, parse_params
from deepmouse.features.stats import LayerStatistics
from deepmouse.scoring import NeuralData, load_neural_data


def statistics_of(features: list[np.ndarray]) -> LayerStatistics:
    """Layer statistics computed directly (float64) from full activations."""
    kernels = []
    for x in features:
        varying = np.ptp(x, axis=0) > 0
        z = StandardScaler().fit_transform(x[:, varying]) if varying.any() else np.zeros((len(x), 0))
        kernels.append(z @ z.T)
    layers = pd.DataFrame({
        "layer_index": np.arange(len(features)), "layer_name": [f"layer{i}" for i in range(len(features))],
        "module_type": "Linear", "n_features": [x.shape[1] for x in features],
        "n_kept": [int((np.ptp(x, axis=0) > 0).sum()) for x in features],
        "depth": np.linspace(0, 1, len(features)),
    })
    return LayerStatistics(layers, np.stack([x @ x.T for x in features]), np.stack([x.sum(1) for x in features]),
                           np.stack(kernels))


def neural_from_trials(trials_by_area: dict[str, np.ndarray], reliability: float | dict = 0.9) -> NeuralData:
    """NeuralData from per-area trials of shape (n_stimuli, n_neurons, n_trials); reliability per area or one for all."""
    rows, neurons = [], []
    for a, (area, trials) in enumerate(trials_by_area.items()):
        n_stimuli, n_neurons, n_trials = trials.shape
        ids = 1000 * (a + 1) + np.arange(n_neurons)
        stimulus, neuron, trial = np.meshgrid(np.arange(n_stimuli), np.arange(n_neurons), np.arange(n_trials), indexing="ij")
        rows.append(pd.DataFrame({"neuron_id": ids[neuron.ravel()], "stimulus_index": stimulus.ravel(),
                                  "trial": trial.ravel(), "response": trials.ravel()}))
        neurons.append(pd.DataFrame({"neuron_id": ids, "area": area, "cortical_layer": "L2/3",
                                     "cre_line": "Cux2-CreERT2", "cc_max": 0.9,
                                     "reliability": reliability[area] if isinstance(reliability, dict) else reliability,
                                     "selected": True}))
    trials = pd.concat(rows, ignore_index=True)
    means = trials.groupby(["neuron_id", "stimulus_index"], as_index=False)["response"].mean()
    return load_neural_data(pd.concat(neurons, ignore_index=True), means.rename(columns={"response": "mean_response"}),
                            trials)


def random_layers(rng: np.random.Generator, n_stimuli: int, sizes=(20, 50, 100, 200, 400)) -> list[np.ndarray]:
    """Layers sharing a latent structure, like a network's (so their scores are correlated)."""
    latent = rng.normal(size=(n_stimuli, 30))
    return [np.tanh(latent @ rng.normal(size=(30, p)) / 5 + 0.5 * rng.normal(size=(n_stimuli, p))) for p in sizes]


def scoring_cfg(**scoring) -> ScoringConfig:
    return parse_params({"scoring": {"bootstrap": {"n": 200}, **scoring}}).scoring


TINY_MODELS = ("alexnet_random", "squeezenet1_1_random")
"""The models of :func:`tiny_project`: registry ids, so their feature keys are real ones."""


def tiny_project(root, n_stimuli: int = 30, n_trials: int = 4) -> dict:
    """A project folder holding what the scores and store stages read, from tiny seeded data.

    ``data/stimuli/stimuli.npy``, ``data/neurons/neurons.parquet`` (8 neurons in VISp and
    VISl, with every column of the store's ``neurons`` table), ``data/responses/{means,
    trials}.parquet``, one feature entry per model of :data:`TINY_MODELS` under
    ``data/features`` (statistics of random layers, keyed as the features stage keys them),
    a pulled source's ``data/raw/manifest.json`` and ``data/params.json``; a ``dvc.yaml``
    marks the project root.

    Returns
    -------
    dict of keyword arguments for :func:`deepmouse.scoring.run.score_models` (less ``cfg``
    and ``out_dir``), plus ``raw_dir`` and ``params_json``.
    """
    import json

    from deepmouse.features.cache import feature_cache_key, hash_stimuli, write_feature_entry
    from deepmouse.models.registry import load_zoo

    rng = np.random.default_rng(7)
    (root / "dvc.yaml").write_text("stages: {}\n")
    data = root / "data"
    for folder in ("stimuli", "neurons", "responses", "features", "raw"):
        (data / folder).mkdir(parents=True, exist_ok=True)
    stimuli = rng.integers(0, 256, size=(n_stimuli, 8, 8), dtype=np.uint8)
    np.save(data / "stimuli" / "stimuli.npy", stimuli)
    layers = random_layers(rng, n_stimuli, sizes=(6, 12, 24))
    tuning = np.concatenate([layers[1][:, :4], layers[2][:, :4]], axis=1)  # neurons driven by the layers
    trials = tuning[:, :, None] + 0.3 * rng.normal(size=(n_stimuli, 8, n_trials))
    neurons = pd.DataFrame({
        "neuron_id": np.arange(8) + 1000, "experiment_id": [1] * 4 + [2] * 4, "container_id": [11] * 4 + [12] * 4,
        "animal": ["m1", "m1", "m2", "m2"] * 2, "area": ["VISp"] * 4 + ["VISl"] * 4, "cre_line": "Cux2-CreERT2", "imaging_depth": 175,
        "cortical_layer": "L2/3", "reliability": 0.9, "cc_max": 0.95, "image_selective": True,
        "running_modulated": False, "selected": True, "modality": "calcium",
    })
    stimulus, neuron, trial = np.meshgrid(np.arange(n_stimuli), np.arange(8), np.arange(n_trials), indexing="ij")
    rows = pd.DataFrame({"neuron_id": neurons["neuron_id"].to_numpy()[neuron.ravel()],
                         "stimulus_index": stimulus.ravel(), "trial": trial.ravel(), "response": trials.ravel()})
    neurons.to_parquet(data / "neurons" / "neurons.parquet", index=False)
    rows.to_parquet(data / "responses" / "trials.parquet", index=False)
    rows.groupby(["neuron_id", "stimulus_index"], as_index=False)["response"].mean().rename(
        columns={"response": "mean_response"}).to_parquet(data / "responses" / "means.parquet", index=False)
    zoo = load_zoo()
    for i, model_id in enumerate(TINY_MODELS):
        key = feature_cache_key(zoo.get(model_id), init_seed=0, weights_sha256=None, preprocessing="paper",
                                stimuli_sha256=hash_stimuli(stimuli))
        model_layers = layers if i == 0 else random_layers(np.random.default_rng(i), n_stimuli, sizes=(5, 9))
        write_feature_entry(data / "features" / model_id, statistics_of(model_layers), key,
                            {"n_params": 100 + i, "n_layers": len(model_layers)})
    (data / "raw" / "1.nwb").write_bytes(b"recording 1")
    (data / "raw" / "manifest.json").write_text(json.dumps(
        {"source": "simulated", "experiments": [{"experiment_id": 1, "sha256": "a" * 64, "file": "1.nwb"}]}))
    (data / "params.json").write_text('{"zoo": "tiny"}\n')
    return {"features_root": data / "features", "stimuli_dir": data / "stimuli",
            "neurons_path": data / "neurons" / "neurons.parquet", "responses_dir": data / "responses",
            "raw_dir": data / "raw", "params_json": data / "params.json"}


def tiny_scoring_cfg() -> ScoringConfig:
    """Scoring params quick on :func:`tiny_project`'s data."""
    return scoring_cfg(bootstrap={"n": 20}, cv={"n_folds": 5, "n_splits": 4}, regression={"relative_alphas": [0.1, 1.0]})
