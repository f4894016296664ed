"""The checks stage at zoo scale: per-neuron tables validated model by model, against loading them whole.

A synthetic project (``--models`` models × ``--layers`` layers × ``--neurons`` neurons, all
selected, in six areas) is written the way the pipeline writes it: one Parquet file per model
and per-neuron table under ``data/scores/models/<model_id>/``, and a store whose
``regression_scores`` and ``neuron_scores`` are views over them. Every table passes every
check, so each gate does all its work. Each measurement runs in a fresh process; wall time
and peak RSS (``VmHWM``, restarted after the imports) are its own:

1. ``new, cold``: :func:`deepmouse.quality.gate.run_checks` with an empty verdicts folder
   (every model validated);
2. ``new, warm``: again, nothing changed (every verdict reused);
3. ``new, +1 model``: one more model added to the store (only that model validated);
4. ``old``: the gate of ``--old-rev`` (its ``gate.py`` and ``expectations.py`` from git),
   which loads each table whole into pandas and validates it in one go. ``--skip-old`` leaves
   it out.

The warm run's fixed costs are then timed alone: the sha256 of every per-neuron file (the
verdicts' keys), the location of each model's rows from the files' footers, and the SQL checks
of ``sql/checks`` (``layers_scored.sql`` scans ``regression_scores``). ``--tracemalloc`` adds
the Python-heap peak (numpy and pandas buffers; not DuckDB's or Arrow's) of the cold and old
runs, measured in separate runs as tracing slows them. Run::

    python benchmarks/checks.py --models 20 --layers 60 --neurons 6619 --out benchmarks/results/checks.json
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from deepmouse.config import AREAS, ChecksConfig
from deepmouse.errors import DeepmouseError

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "checks.json"
DEFAULT_OLD_REV = "f4e432b"
"""The last commit whose gate loaded the per-neuron tables whole."""

N_CONDITIONS = 119
CFG = ChecksConfig(min_selected_per_area=5, max_nan_fraction=0.0)


# ----------------------------------------------------------------------- the synthetic project
def model_id(index: int) -> str:
    return f"model_{index:03d}"


def small_tables(n_models: int, n_layers: int, n_neurons: int, rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """Every table of the store but the per-neuron ones, consistent with them and passing every check."""
    models = [model_id(i) for i in range(n_models)]
    areas = np.array(AREAS)[np.arange(n_neurons) % len(AREAS)]
    reliability = rng.uniform(0.3, 0.95, n_neurons)
    neurons = pd.DataFrame({
        "neuron_id": np.arange(n_neurons, dtype=np.int64), "experiment_id": np.arange(n_neurons) // 100,
        "container_id": np.arange(n_neurons) // 300, "area": areas, "cre_line": "Cux2-CreERT2", "imaging_depth": 175,
        "cortical_layer": "L2/3", "reliability": reliability, "cc_max": np.sqrt(reliability),
        "image_selective": True, "running_modulated": False, "selected": True,
    })
    n_per_area = pd.Series(areas).value_counts()
    layers = pd.DataFrame({
        "model_id": np.repeat(models, n_layers), "layer_index": np.tile(np.arange(n_layers), n_models),
        "layer_name": [f"layer{j}" for j in range(n_layers)] * n_models, "module_type": "Conv2d", "n_features": 1000,
        "depth": np.tile(np.linspace(0, 1, n_layers), n_models),
    })
    rsa = layers[["model_id", "layer_index"]].merge(pd.DataFrame({"site": list(AREAS)}), how="cross").assign(
        site_kind="area", metric="pearson", noise_ceiling=0.8)
    rsa["score"] = rng.uniform(0, 0.5, len(rsa))
    rsa["n_neurons"] = rsa["site"].map(n_per_area)
    model_scores = pd.DataFrame([
        {"model_id": m, "method": method, "layer_selection": rule, "site_kind": "area", "site": area}
        for m in models for method in ("rsa", "cka", "regression") for rule in ("max", "cv") for area in AREAS
    ])
    score = rng.uniform(0, 0.5, len(model_scores))
    model_scores = model_scores.assign(
        score=score, ci_low=score - 0.05, ci_high=score + 0.05, normalized_score=score / np.sqrt(0.8),
        noise_ceiling=0.8, best_layer_index=0, best_layer_depth=0.0, layer_stability=1.0,
        n_neurons=model_scores["site"].map(n_per_area), low_ceiling=False, n_low_ceiling=0, source="simulated")
    comparisons = pd.DataFrame([
        {"method": method, "layer_selection": rule, "site_kind": "area", "site": area, "model_a": models[0],
         "model_b": models[1], "difference": 0.1, "ci_low": 0.02, "ci_high": 0.18, "p_value": 0.01, "q_value": 0.01,
         "distinguishable": True}
        for method in ("rsa", "cka", "regression") for rule in ("max", "cv") for area in AREAS
    ])
    return {
        "runs": pd.DataFrame([{
            "run_id": "0" * 16, "source": "simulated", "n_experiments": 1, "experiments": "[1]",
            "experiments_digest": "e" * 64, "params_digest": "p" * 64, "package_versions": "{}",
            "code_digest": "c" * 64, "code_revision": None, "dvc_lock_digest": None,
            "trial_responses": True, "extra_areas": "[]", "created": pd.Timestamp("2026-01-01")}]),
        "models": pd.DataFrame({
            "model_id": models, "display_name": models, "family": "convolutional", "source": "torchvision",
            "architecture": "synthetic", "training": "random", "training_category": "random", "task_cluster": None,
            "n_params": 1_000_000, "weights_sha256": None, "imagenet_top1": None, "imagenet_top1_source": None}),
        "layers": layers, "neurons": neurons, "rsa_scores": rsa,
        "cka_scores": rsa.drop(columns="metric").assign(estimator="unbiased"), "model_scores": model_scores,
        "model_comparisons": comparisons,
    }


def write_model_files(root: Path, index: int, n_layers: int, n_neurons: int) -> dict[str, Path]:
    """One model's ``regression_scores`` and ``neuron_scores`` files, as the scores stage lays them out."""
    rng = np.random.default_rng(index)
    folder = root / "data" / "scores" / "models" / model_id(index)
    folder.mkdir(parents=True, exist_ok=True)
    regression = pd.DataFrame({
        "model_id": model_id(index), "layer_index": np.repeat(np.arange(n_layers, dtype=np.int32), n_neurons),
        "neuron_id": np.tile(np.arange(n_neurons, dtype=np.int64), n_layers),
        "alpha": 10.0 ** rng.integers(-2, 4, n_layers * n_neurons),
        "score": rng.uniform(-0.2, 0.6, n_layers * n_neurons),
    })
    score = rng.uniform(-0.2, 0.6, 2 * n_neurons)
    neuron_scores = pd.DataFrame({
        "model_id": model_id(index), "method": "regression", "layer_selection": np.repeat(["max", "cv"], n_neurons),
        "neuron_id": np.tile(np.arange(n_neurons, dtype=np.int64), 2), "score": score,
        "normalized_score": score / 0.9, "low_ceiling": False,
    })
    paths = {"regression_scores": folder / "regression_scores.parquet", "neuron_scores": folder / "neuron_scores.parquet"}
    regression.to_parquet(paths["regression_scores"], index=False)
    neuron_scores.to_parquet(paths["neuron_scores"], index=False)
    return paths


def build_project(root: Path, n_models: int, n_layers: int, n_neurons: int) -> None:
    """Write the per-model files that are missing, the means, and a store over ``n_models`` models."""
    from deepmouse.store.build import ParquetFiles, build_store

    root.mkdir(parents=True, exist_ok=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    files = {"regression_scores": [], "neuron_scores": []}
    for index in range(n_models):
        folder = root / "data" / "scores" / "models" / model_id(index)
        paths = ({name: folder / f"{name}.parquet" for name in files} if folder.is_dir()
                 else write_model_files(root, index, n_layers, n_neurons))
        for name, path in paths.items():
            files[name].append(path)
    tables = small_tables(n_models, n_layers, n_neurons, np.random.default_rng(0))
    means = root / "data" / "responses" / "means.parquet"
    if not means.is_file():
        means.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({
            "neuron_id": np.repeat(tables["neurons"]["neuron_id"].to_numpy(), N_CONDITIONS),
            "stimulus_index": np.tile(np.arange(N_CONDITIONS), n_neurons),
            "mean_response": np.random.default_rng(1).normal(size=N_CONDITIONS * n_neurons), "n_trials": 50,
        }).to_parquet(means, index=False)
    build_store(root / "data" / "store.duckdb", {**tables, **{name: ParquetFiles(paths) for name, paths in files.items()}},
                REPO / "sql")


# ---------------------------------------------------------------------------- measurements
def reset_peak_rss() -> bool:
    """Restart the peak-RSS count at the current RSS (Linux ``clear_refs``); False where not allowed."""
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int:
    """This process's peak RSS: ``VmHWM`` where Linux reports it, else ``ru_maxrss``."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def load_old_gate(rev: str):
    """The gate (and its expectations module) of git revision ``rev``, in place of this one's."""
    modules = {}
    with tempfile.TemporaryDirectory(prefix="old-gate-") as folder:
        for name in ("expectations", "gate"):
            source = subprocess.run(["git", "show", f"{rev}:deepmouse/quality/{name}.py"], cwd=REPO,
                                    capture_output=True, text=True, check=True).stdout
            path = Path(folder) / f"{name}.py"
            path.write_text(source)
            spec = importlib.util.spec_from_file_location(f"deepmouse.quality.{name}", path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module  # the old gate imports the old expectations by this name
            spec.loader.exec_module(module)
            modules[name] = module
    return modules["gate"]


def run_child(kind: str, root: Path, old_rev: str, trace: bool) -> None:
    """Measure one run of a gate in this fresh process; print wall time and peak memory as a JSON line."""
    if kind == "old":
        gate = load_old_gate(old_rev)
        arguments = ()
    else:
        from deepmouse.quality import gate
        arguments = (root / "data" / "checks",)
    import great_expectations  # noqa: F401  (imported before the peak is reset, as the gate imports it)

    lines = []
    progress = {"progress": lines.append} if kind != "old" else {}
    result = {"peak_counts_imports": not reset_peak_rss(), "rss_before_bytes": psutil.Process().memory_info().rss}
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    report = gate.run_checks(root / "data" / "store.duckdb", root / "data" / "responses" / "means.parquet",
                             REPO / "sql" / "checks", CFG, root / "checks.json", *arguments, **progress)
    result["seconds"] = time.perf_counter() - started
    if trace:
        result["tracemalloc_peak_bytes"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    result["peak_rss_bytes"] = peak_rss_bytes()
    result["passed"] = report["passed"]
    result["rows"] = report["tables"]
    result["validated"] = sum(": validated" in line for line in lines)
    result["reused"] = sum(": reused" in line for line in lines)
    result["why_validated"] = sorted({line.split(": validated (", 1)[1].split(")")[0] for line in lines
                                      if ": validated (" in line})
    if kind == "warm":
        result["fixed_costs"] = fixed_costs(root)
    print(json.dumps(result))


def fixed_costs(root: Path) -> dict:
    """Seconds of the parts of a run that do not shrink when every verdict is reused."""
    from deepmouse.hashing import file_sha256
    from deepmouse.quality.gate import run_sql_checks
    from deepmouse.quality.per_model import locate_model_rows
    from deepmouse.store.build import open_store, parquet_files

    db = root / "data" / "store.duckdb"
    con = open_store(db)
    try:
        costs = {}
        started = time.perf_counter()
        files = parquet_files(con, db)
        for path in files:
            file_sha256(path)
        costs["sha256_of_files"] = time.perf_counter() - started
        costs["bytes_of_files"] = sum(path.stat().st_size for path in files)
        started = time.perf_counter()
        locate_model_rows(con, db)
        costs["locate_model_rows"] = time.perf_counter() - started
        for path in sorted((REPO / "sql" / "checks").glob("*.sql")):
            started = time.perf_counter()
            con.execute(path.read_text(), {"min_selected_per_area": CFG.min_selected_per_area}
                        if "$min_selected_per_area" in path.read_text() else {}).fetchdf()
            costs[f"sql_checks/{path.name}"] = time.perf_counter() - started
        started = time.perf_counter()
        run_sql_checks(con, REPO / "sql" / "checks", CFG)
        costs["sql_checks"] = time.perf_counter() - started
    finally:
        con.close()
    return costs


def measure_in_child(kind: str, root: Path, args: argparse.Namespace, trace: bool = False) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--workdir", str(root),
               "--old-rev", args.old_rev] + (["--tracemalloc"] if trace else [])
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise DeepmouseError(f"the {kind} measurement process exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def format_table(report: dict) -> str:
    rows = [f"{'run':<16} {'models':>6} {'validated':>9} {'reused':>6} {'seconds':>8} {'peak RSS MiB':>12} "
            f"{'above imports MiB':>17} {'tracemalloc MiB':>15}"]
    for name, run in report["runs"].items():
        traced = run.get("tracemalloc_peak_bytes")
        rows.append(f"{name:<16} {run['models']:>6} {run['validated']:>9} {run['reused']:>6} {run['seconds']:>8.1f} "
                    f"{run['peak_rss_bytes'] / 2**20:>12.0f} "
                    f"{(run['peak_rss_bytes'] - run['rss_before_bytes']) / 2**20:>17.0f} "
                    f"{'' if traced is None else f'{traced / 2**20:.0f}':>15}")
    costs = report["runs"]["new, warm"]["fixed_costs"]
    rows.append("fixed costs of a warm run (s): " + ", ".join(
        f"{name} {value:.2f}" for name, value in costs.items() if name != "bytes_of_files")
        + f" (files: {costs['bytes_of_files'] / 2**20:.0f} MiB)")
    return "\n".join(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The checks stage: model by model against whole tables.")
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--layers", type=int, default=60)
    parser.add_argument("--neurons", type=int, default=6619)
    parser.add_argument("--workdir", type=Path, help="project folder to build and keep (a temporary one otherwise)")
    parser.add_argument("--old-rev", default=DEFAULT_OLD_REV, help="git revision of the old gate")
    parser.add_argument("--skip-old", action="store_true", help="do not run the old gate")
    parser.add_argument("--tracemalloc", action="store_true", help="also measure the Python-heap peaks")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file for all numbers")
    parser.add_argument("--child", choices=("cold", "warm", "added", "old"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.models, args.layers, args.neurons) < 2:
        parser.error("--models, --layers and --neurons must each be at least 2")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child is not None:
        run_child(args.child, args.workdir, args.old_rev, args.tracemalloc)
        return
    if args.workdir is None:
        with tempfile.TemporaryDirectory(prefix="checks-benchmark-") as folder:
            run_benchmark(Path(folder), args)
    else:
        run_benchmark(args.workdir, args)


def run_benchmark(root: Path, args: argparse.Namespace) -> None:
    """Build the project in ``root``, measure every run, print the table and write the JSON report."""
    shutil.rmtree(root / "data" / "checks", ignore_errors=True)
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(), "cpus": psutil.cpu_count(), "host_memory_bytes": psutil.virtual_memory().total,
        "models": args.models, "layers": args.layers, "neurons": args.neurons, "old_rev": args.old_rev, "runs": {},
    }
    print(f"building {args.models} models x {args.layers} layers x {args.neurons} neurons in {root} ...", flush=True)
    started = time.perf_counter()
    build_project(root, args.models, args.layers, args.neurons)
    report["build_seconds"] = time.perf_counter() - started
    plan = [("new, cold", "cold", args.models), ("new, warm", "warm", args.models)]
    if not args.skip_old:
        plan.append(("old", "old", args.models))
    for name, kind, n_models in plan:
        print(f"{name} ...", flush=True)
        report["runs"][name] = {"models": n_models, **measure_in_child(kind, root, args)}
    if args.tracemalloc:
        for name, kind in [("new, cold", "cold")] + ([] if args.skip_old else [("old", "old")]):
            print(f"{name}, traced ...", flush=True)
            if kind == "cold":
                shutil.rmtree(root / "data" / "checks", ignore_errors=True)
            traced = measure_in_child(kind, root, args, trace=True)
            report["runs"][name]["tracemalloc_peak_bytes"] = traced["tracemalloc_peak_bytes"]
            report["runs"][name]["traced_seconds"] = traced["seconds"]
    print("new, +1 model ...", flush=True)
    build_project(root, args.models + 1, args.layers, args.neurons)
    report["runs"]["new, +1 model"] = {"models": args.models + 1, **measure_in_child("added", root, args)}
    print(format_table(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    print(f"numbers written to {args.out}")


if __name__ == "__main__":
    try:
        main()
    except DeepmouseError as err:
        sys.exit(f"error: {err}")
