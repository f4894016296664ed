"""Stage store: the DuckDB results store with its tables and ranking views, built aside and checked by `checks`."""
from deepmouse.config import load_params
from deepmouse.pipeline import run_store
from deepmouse.stage import run_stage

if __name__ == "__main__":
    run_stage("store", lambda a: run_store(load_params(a.params), a.scores, a.neurons, a.features, a.stimuli, a.raw,
                                           a.params_json, a.sql, a.out),
              "scores", "neurons", "features", "stimuli", "raw", "params_json", "sql", "out")
