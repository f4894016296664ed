"""Stage neurons: reliability, selectivity and selection flags for every neuron."""
from deepmouse.config import load_params
from deepmouse.pipeline import run_neurons
from deepmouse.stage import run_stage

if __name__ == "__main__":
    run_stage("neurons", lambda a: run_neurons(load_params(a.params), a.responses, a.out, a.counts),
              "responses", "out", "counts")
