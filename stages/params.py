"""Stage params: validate the whole params.yaml before any other stage runs."""
from deepmouse.pipeline import run_params
from deepmouse.stage import run_stage

if __name__ == "__main__":
    run_stage("params", lambda a: run_params(a.params, a.out, a.stamp), "out", "stamp")
