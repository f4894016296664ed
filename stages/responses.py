"""Stage responses: per-trial dF/F responses and per-condition means."""
from deepmouse.config import load_params
from deepmouse.pipeline import run_responses
from deepmouse.stage import run_stage

if __name__ == "__main__":
    run_stage("responses", lambda a: run_responses(load_params(a.params), a.raw, a.out), "raw", "out")
