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
