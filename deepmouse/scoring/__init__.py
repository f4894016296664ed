"""Scores of models against neurons (DESIGN §6): one module per concern.

- ``neural``: selected neurons lined up with their responses, sites and ceilings;
- ``regression``: ridge fits of every neuron on every layer;
- ``selection``: ``max`` and ``cv`` layer selection, observed and inside each bootstrap replicate;
- ``model``: one model's score tables;
- ``comparisons``: paired model comparisons with Benjamini-Hochberg;
- ``run``: the ``scores`` stage over the zoo;
- ``api``: the same code on a user's own arrays.

The arithmetic lives in :mod:`deepmouse.metrics`.
"""

from deepmouse.scoring.model import score_model
from deepmouse.scoring.neural import NeuralData, load_neural_data
from deepmouse.scoring.run import SCORE_TABLES, score_models

__all__ = ["NeuralData", "SCORE_TABLES", "load_neural_data", "score_model", "score_models"]
