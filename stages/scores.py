"""Stage scores: RSA and ridge-regression scores of every zoo model."""
from deepmouse.config import load_params
from deepmouse.pipeline import run_scores
from deepmouse.stage import run_stage

if __name__ == "__main__":
    run_stage("scores", lambda a: run_scores(load_params(a.params), a.features, a.stimuli, a.neurons, a.responses,
                                             a.out), "features", "stimuli", "neurons", "responses", "out")
