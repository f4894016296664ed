"""Stage features@<model>: per-layer activation statistics of one zoo model."""
from deepmouse.config import load_params
from deepmouse.pipeline import run_features
from deepmouse.stage import run_stage

if __name__ == "__main__":
    run_stage("features", lambda a: run_features(load_params(a.params), a.model, a.stimuli, a.out),
              "model", "stimuli", "out")
