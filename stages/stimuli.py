"""Stage stimuli: the 118 scenes plus the blank, as the models see them."""
from deepmouse.pipeline import run_stimuli
from deepmouse.stage import run_stage

if __name__ == "__main__":
    run_stage("stimuli", lambda a: run_stimuli(a.raw, a.out), "raw", "out")
