"""Per-model scoring time and peak memory at the default run's and the reference study's neuron counts.

For each model, on its real layer statistics from the default run (``<data>/features/<model>``,
checked against ``<data>/stimuli`` and the params like the ``scores`` stage does) and ``n``
synthetic neurons in the six areas (default 177, the default run's selection, and 6,619, the
reference study's count), one fresh process per measurement runs
:func:`deepmouse.scoring.model.score_model` with the params' ``scoring`` section and reports:

- the total wall time and CPU time (the process's, all threads: on a shared machine it moves
  less with the load than the wall time), and the peak RSS above what the process held
  before scoring (Linux ``VmHWM`` reset through ``/proc/self/clear_refs``);
- the wall and CPU time of each step, by method: RSA ``rdms`` (neural RDMs), ``ceilings``
  (split-half RDM ceilings), ``layer scores``, ``selection`` (``max`` and ``cv`` on the
  observed data alone), ``bootstrap`` (the same selections inside every resample: the
  selection call with all the weightings, less the observed-only one); regression ``fits``
  (outer folds with the inner-LOO alpha, every layer and neuron), ``selection``,
  ``bootstrap``, ``ceilings``; ``other`` is the rest of ``score_model`` (model RDMs, tables).
  The observed-only selections are extra calls, timed apart and left out of the total.

With ``--baseline REV`` each measurement also runs on the ``deepmouse`` package (and
``params.yaml``) of git revision ``REV``, interleaved with the working tree's (baseline, current,
per model and size), so both see the same load; the score tables of the two are compared
(largest absolute difference per table). The synthetic neurons: each is planted in one
random layer (its responses a random direction of that layer's centred kernel, ``K_c^{1/2} g``)
plus trial noise, two halves of trials per neuron, so split-half reliabilities spread over about 0.3-0.95.
The timing does not depend on the values beyond the alphas and layers chosen.

Run from the project root (the default data folder is this checkout's ``data/``)::

    python benchmarks/scores_at_scale.py --baseline main --out benchmarks/results/scores_at_scale.json

Options: ``--models``, ``--neurons``, ``--data DIR``, ``--threads N`` (torch CPU threads),
``--seed N`` (the synthetic neurons).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from feature_statistics import peak_rss_bytes, reset_peak_rss

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = ("alexnet_random", "resnet18_random", "efficientnet_lite0")
DEFAULT_NEURONS = (177, 6619)
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "scores_at_scale.json"
UNTRAINED_ZOO_LAYERS = 21877
"""Layers of the 99 untrained models (``docs/scaling.md``), for the zoo estimate."""
STEPS = {
    "rsa": ("rdms", "ceilings", "layer scores", "selection", "bootstrap"),
    "regression": ("fits", "selection", "bootstrap", "ceilings"),
}


def synthetic_neural(kernels: np.ndarray, n_neurons: int, rng: np.random.Generator):
    """``NeuralData`` of ``n_neurons`` planted neurons in the six areas.

    Parameters
    ----------
    kernels : ndarray of shape (n_layers, n_stimuli, n_stimuli)
        The layers' standardised kernels ``K = Z Zᵀ``.
    n_neurons : int
    rng : numpy.random.Generator
    """
    from deepmouse.config import AREAS
    from deepmouse.scoring.neural import NeuralData

    n_layers, n_stimuli = kernels.shape[0], kernels.shape[1]
    centring = np.eye(n_stimuli) - 1.0 / n_stimuli
    roots = {}
    signal = np.empty((n_stimuli, n_neurons))
    layer_of = rng.integers(0, n_layers, n_neurons)
    for layer in np.unique(layer_of):
        eigenvalues, eigenvectors = np.linalg.eigh(centring @ kernels[layer] @ centring)
        roots[layer] = eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))
    for neuron, layer in enumerate(layer_of):
        planted = roots[layer] @ rng.normal(size=n_stimuli)
        signal[:, neuron] = planted / planted.std()
    noise = rng.uniform(0.4, 2.0, n_neurons)
    half_a = signal + noise * rng.normal(size=signal.shape)
    half_b = signal + noise * rng.normal(size=signal.shape)
    split_half = np.array([np.corrcoef(half_a[:, i], half_b[:, i])[0, 1] for i in range(n_neurons)])
    reliability = 2 * split_half / (1 + split_half)
    areas = np.sort(np.arange(n_neurons) % len(AREAS))
    neurons = pd.DataFrame({
        "neuron_id": np.arange(n_neurons), "area": np.array(AREAS)[areas], "cortical_layer": "L2/3",
        "cre_line": "Cux2-CreERT2", "reliability": reliability, "cc_max": np.sqrt(np.clip(reliability, 0, 1)),
        "selected": True,
    })
    return NeuralData(neurons, (half_a + half_b) / 2, half_a, half_b)


class StepTimer:
    """Wraps the functions ``score_model`` calls (in its module's namespace) to time each step."""

    def __init__(self, module) -> None:
        self.module = module
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self.extra = 0.0  # observed-only selections: timed, not part of score_model
        self.extra_cpu = 0.0

    def add(self, key: str, seconds: float, cpu_seconds: float) -> None:
        self.seconds[key] = self.seconds.get(key, 0.0) + seconds
        self.cpu_seconds[key] = self.cpu_seconds.get(key, 0.0) + cpu_seconds

    def timed(self, key: str, function):
        def wrapper(*args, **kwargs):
            start, cpu_start = time.perf_counter(), time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.add(key, time.perf_counter() - start, time.process_time() - cpu_start)
        return wrapper

    def selection(self, method: str, function, weights_position: int):
        """The selection with every weighting, and apart, each rule on the observed row alone."""
        def wrapper(*args):
            start, cpu_start = time.perf_counter(), time.process_time()
            result = function(*args)
            full, full_cpu = time.perf_counter() - start, time.process_time() - cpu_start
            observed_args = list(args)
            observed_args[weights_position] = args[weights_position][:1]
            observed = observed_cpu = 0.0
            for rule in args[-1]:
                start, cpu_start = time.perf_counter(), time.process_time()
                function(*observed_args[:-1], (rule,))
                seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
                self.add(f"{method} selection {rule}", seconds, cpu_seconds)
                observed += seconds
                observed_cpu += cpu_seconds
            self.extra += observed
            self.extra_cpu += observed_cpu
            self.add(f"{method} selection", observed, observed_cpu)
            self.add(f"{method} bootstrap", full - observed, full_cpu - observed_cpu)
            return result
        return wrapper

    @contextlib.contextmanager
    def installed(self, neural):
        m = self.module
        saved = {name: getattr(m, name) for name in (
            "rdm_from_responses", "rdm_noise_ceiling", "score_entries", "select_rsa", "fit_regression_layers",
            "select_regression")}
        m.rdm_from_responses = self.timed("rsa rdms", saved["rdm_from_responses"])
        m.rdm_noise_ceiling = self.timed("rsa ceilings", saved["rdm_noise_ceiling"])
        m.score_entries = self.timed("rsa layer scores", saved["score_entries"])
        m.select_rsa = self.selection("rsa", saved["select_rsa"], 2)
        m.fit_regression_layers = self.timed("regression fits", saved["fit_regression_layers"])
        m.select_regression = self.selection("regression", saved["select_regression"], 3)
        ceilings = type(neural).ceilings
        type(neural).ceilings = self.timed("regression ceilings", ceilings)
        try:
            yield
        finally:
            for name, function in saved.items():
                setattr(m, name, function)
            type(neural).ceilings = ceilings


def measure(args: argparse.Namespace) -> dict:
    """One model at one neuron count with the ``deepmouse`` on ``sys.path``; tables to ``args.tables``."""
    import torch

    from deepmouse.config import load_params
    from deepmouse.scoring import model as model_module
    from deepmouse.scoring.run import load_model_statistics, stimuli_digest

    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_params(args.params)
    data = Path(args.data)
    stats, _ = load_model_statistics(data / "features", args.model, params.features,
                                     stimuli_digest(data / "stimuli"))
    usable = stats.usable_layers()
    neural = synthetic_neural(stats.kernel[usable], args.neurons, np.random.default_rng(args.seed))
    timer = StepTimer(model_module)
    reset = reset_peak_rss()
    before = peak_rss_bytes()
    with timer.installed(neural):
        start, cpu_start = time.perf_counter(), time.process_time()
        tables = model_module.score_model(args.model, stats, neural, params.scoring, progress=lambda _: None)
        wall = time.perf_counter() - start - timer.extra
        cpu = time.process_time() - cpu_start - timer.extra_cpu
    peak = peak_rss_bytes() - before
    pd.to_pickle(tables, args.tables)
    steps, cpu_steps = dict(timer.seconds), dict(timer.cpu_seconds)
    listed = [f"{method} {step}" for method, names in STEPS.items() for step in names]
    steps["other"] = wall - sum(steps.get(key, 0.0) for key in listed)
    cpu_steps["other"] = cpu - sum(cpu_steps.get(key, 0.0) for key in listed)
    return {"model": args.model, "neurons": args.neurons, "layers": int(usable.sum()),
            "seconds": wall, "cpu_seconds": cpu, "steps": steps,
            "cpu_steps": cpu_steps, "peak_rss_above_start_bytes": peak, "peak_reset": reset,
            "torch_threads": torch.get_num_threads(), "deepmouse": str(Path(model_module.__file__).parents[2])}


def export_revision(revision: str, into: Path) -> Path:
    """``deepmouse/`` and ``params.yaml`` of a git revision, unpacked under ``into``."""
    archive = into / "baseline.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), revision, "deepmouse", "params.yaml"],
                   check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "baseline", filter="data")
    return into / "baseline"


def run_one(code_root: Path, model: str, neurons: int, args: argparse.Namespace, tables: Path) -> dict:
    """One measurement in a fresh process with ``code_root`` first on the path."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(code_root), str(Path(__file__).resolve().parent)]))
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--model", model, "--neurons", str(neurons),
               "--data", str(args.data), "--params", str(code_root / "params.yaml"), "--seed", str(args.seed),
               "--tables", str(tables)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=code_root)
    if done.returncode != 0:
        raise RuntimeError(f"{model} at {neurons} neurons ({code_root}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table_differences(before: dict[str, pd.DataFrame], after: dict[str, pd.DataFrame]) -> dict[str, float]:
    """Largest absolute difference of each table's numeric columns (NaN where both are NaN counts as equal)."""
    out = {}
    for name, old in before.items():
        new = after[name]
        if old.shape != new.shape or list(old.columns) != list(new.columns):
            out[name] = float("inf")
            continue
        numeric = old.select_dtypes("number").columns
        a, b = old[numeric].to_numpy(dtype=np.float64), new[numeric].to_numpy(dtype=np.float64)
        both_nan = np.isnan(a) & np.isnan(b)
        out[name] = float(np.max(np.where(both_nan, 0.0, np.abs(a - b)), initial=0.0))
    return out


def zoo_estimate(results: list[dict], neurons: int) -> dict:
    """CPU hours for 99 and 237 models: least squares ``cpu_seconds = a + b · layers`` over the measured
    models (working tree's code), at the untrained zoo's mean layers per model."""
    rows = [r for r in results if r["neurons"] == neurons and r["code"] == "current"]
    if not rows:
        return {}
    layers = np.array([r["layers"] for r in rows], dtype=float)
    seconds = np.array([r["cpu_seconds"] for r in rows])
    slope, intercept = np.polyfit(layers, seconds, 1) if len(rows) > 1 else (seconds[0] / layers[0], 0.0)
    per_model_layers = UNTRAINED_ZOO_LAYERS / 99
    return {f"{count} models": count * (intercept + slope * per_model_layers) / 3600 for count in (99, 237)}


def format_table(results: list[dict]) -> str:
    """Markdown rows: wall and CPU totals, CPU seconds per step, peak memory."""
    lines = ["| model | layers | neurons | code | wall s | CPU s | RSA CPU s: rdms / ceilings / layer scores / "
             "selection / bootstrap | regression CPU s: fits / selection / bootstrap / ceilings | other CPU s "
             "| peak MiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        steps = r["cpu_steps"]
        rsa = " / ".join(f"{steps.get('rsa ' + s, 0):.2f}" for s in STEPS["rsa"])
        regression = " / ".join(f"{steps.get('regression ' + s, 0):.2f}" for s in STEPS["regression"])
        lines.append(f"| {r['model']} | {r['layers']} | {r['neurons']:,} | {r['code']} | {r['seconds']:.1f} "
                     f"| {r['cpu_seconds']:.1f} | {rsa} | {regression} | {steps['other']:.2f} "
                     f"| {r['peak_rss_above_start_bytes'] / 2**20:,.0f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--neurons", nargs="+", type=int, default=list(DEFAULT_NEURONS))
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--baseline", help="git revision whose deepmouse is timed beside the working tree's")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    parser.add_argument("--tables", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.neurons = args.neurons[0] if isinstance(args.neurons, list) else args.neurons
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(measure(args)))
        return 0
    args.data = args.data.resolve()
    results, differences = [], []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        codes = [("current", ROOT)]
        if args.baseline:
            codes.insert(0, ("baseline", export_revision(args.baseline, scratch)))
        for model in args.models:
            for neurons in args.neurons:
                tables = {}
                for code, code_root in codes:
                    tables[code] = scratch / f"{code}.pkl"
                    result = run_one(code_root, model, neurons, args, tables[code])
                    result["code"] = code
                    results.append(result)
                    print(format_table([result]).splitlines()[-1], flush=True)
                if args.baseline:
                    diff = table_differences(pd.read_pickle(tables["baseline"]), pd.read_pickle(tables["current"]))
                    differences.append({"model": model, "neurons": neurons, "max_abs_difference": diff})
                    print(f"  {model} at {neurons}: largest |current - baseline| per table {diff}", flush=True)
    estimates = {n: zoo_estimate(results, n) for n in args.neurons}
    print(format_table(results))
    for n, estimate in estimates.items():
        print(f"zoo estimate at {n:,} neurons (CPU hours): "
              + ", ".join(f"{k}: {v:.2f}" for k, v in estimate.items()))
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.platform(), "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(),
        "baseline": args.baseline, "results": results, "differences": differences, "zoo_estimates": estimates,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
