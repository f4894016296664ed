"""Stage scores: RSA and ridge-regression scores of every zoo model."""
from deepmouse.config import load_params
from deepmouse.pipeline import run_scores
from deepmouse.stage import run_stage

if __name__ == "__main__":
    # Each model's line is flushed as it ends, so the log of a killed run shows what it finished.
    run_stage("scores", lambda a: run_scores(load_params(a.params), a.features, a.stimuli, a.neurons, a.responses,
                                             a.out, progress=lambda line: print(line, flush=True)),
              "features", "stimuli", "neurons", "responses", "out")
