"""Stage pull: the raw NWB files of ``data.source`` and their manifest."""
from deepmouse.config import load_params
from deepmouse.pipeline import run_pull
from deepmouse.stage import run_stage

if __name__ == "__main__":
    run_stage("pull", lambda a: run_pull(load_params(a.params), a.out), "out")
