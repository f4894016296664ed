"""Stage fingerprint: what the data source and the checkpoints hold now (pull and features depend on it)."""
from deepmouse.config import load_params
from deepmouse.pipeline import run_fingerprint
from deepmouse.stage import run_stage

if __name__ == "__main__":
    run_stage("fingerprint", lambda a: run_fingerprint(load_params(a.params), a.source, a.weights),
              "source", "weights")
