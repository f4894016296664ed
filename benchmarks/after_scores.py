"""The stages after ``scores`` at the reference study's scale: 6,619 neurons against 10, 99 and 237 models.

A synthetic project is written the way the scores stage writes it: one folder per model,
``data/scores/models/<model_id>/``, through the stage's own writer
(:func:`deepmouse.scoring.run._write_model_folder`, ``key.json`` last), holding the tables
of :func:`deepmouse.scoring.model.score_model` for ``--layers`` layers × ``--neurons``
neurons in the six areas, both layer selections, both methods and ``scoring.bootstrap.n``
replicates per model × method × selection × site. The tables' columns and dtypes are
checked against what ``score_model`` returns on a tiny seeded input, so the files are the
stage's format, not a copy of it. Values are plausible, not scored: each model has a quality,
each replicate a resample effect shared by every model at a site (the pairing the
comparisons rely on) plus the model's own noise.

Each stage after scoring is then measured in a fresh process, wall time and peak RSS
(``VmHWM``, restarted after the imports), in the order the pipeline runs them:

1. ``comparisons``: what :func:`deepmouse.scoring.run.score_models` does after scoring, on
   every run of the stage (:func:`deepmouse.scoring.run.compare_scored_models`): read every
   model's ``model_scores`` and ``bootstrap_replicates`` (each checked against its
   ``key.json``), compare every pair per site, write ``model_comparisons.parquet`` and its
   record. Three runs: ``first`` (the first ``--models`` - 1 models, nothing kept), ``+1
   model`` (all of them: the last model's pairs computed, the others kept) and ``nothing
   changed``;
2. ``store``: the score tables of :func:`deepmouse.pipeline.run_store` read as it reads
   them, with synthetic ``models``, ``layers``, ``neurons`` and ``runs``, built by
   :func:`deepmouse.store.build.build_store`;
3. ``checks`` and ``checks, nothing changed``: :func:`deepmouse.pipeline.run_checks_stage`
   (copy, snapshot of the per-neuron files, every check, publish), validating the models that
   have no verdict yet (a run with fewer models under the same ``--root`` leaves its verdicts),
   then again with nothing changed;
4. ``report``: :func:`deepmouse.report.plots.write_report` on the published store.

``--old-rev`` adds ``comparisons (old)``: the ``compare_models`` of that git revision on
all the models' tables, whose table must equal the one the ``+1 model`` run wrote (same pairs
and verdicts, numbers to 1e-12). The models' folders are kept
under ``--root`` and reused by a later run with more models (model ``i`` is the same in
every run). Run, once per size::

    python benchmarks/after_scores.py --models 10 --old-rev main --out benchmarks/results/after_scores_10.json
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.util
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.checks import peak_rss_bytes, reset_peak_rss  # noqa: E402
from deepmouse.config import AREAS, ChecksConfig, parse_params  # noqa: E402

DEFAULT_ROOT = Path(tempfile.gettempdir()) / "deepmouse_after_scores"
N_STIMULI = 119
OLD_COMPARISONS_FILE = "model_comparisons.old.parquet"
CHECKS = ChecksConfig(min_selected_per_area=5, max_nan_fraction=0.0)


def model_id(index: int) -> str:
    return f"model_{index:03d}"


def scoring_config(n_boot: int):
    return parse_params({"scoring": {"bootstrap": {"n": n_boot}}}).scoring


# ----------------------------------------------------------------------- the synthetic project
def reference_tables() -> dict[str, pd.DataFrame]:
    """``score_model``'s tables on a tiny seeded input: the format the synthetic tables must have."""
    from tests.scoring.conftest import neural_from_trials, random_layers, scoring_cfg, statistics_of
    from deepmouse.scoring import score_model

    rng = np.random.default_rng(0)
    neural = neural_from_trials({area: rng.normal(size=(30, 4, 4)) for area in ("VISp", "VISl")})
    stats = statistics_of(random_layers(rng, 30, sizes=(5, 8)))
    return score_model("tiny", stats, neural, scoring_cfg(bootstrap={"n": 20}, cv={"n_folds": 5}),
                       progress=lambda _: None)


def check_format(tables: dict[str, pd.DataFrame], reference: dict[str, pd.DataFrame]) -> None:
    """Raise AssertionError unless every table has ``reference``'s columns, in order, with its dtypes."""
    for name, frame in reference.items():
        expected = list(frame.dtypes.items())
        got = list(tables[name].dtypes.items())
        if expected != got:
            raise AssertionError(f"{name}: synthetic columns {got} differ from score_model's {expected}")


def neurons_table(n_neurons: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    reliability = rng.uniform(0.3, 0.95, n_neurons)
    return pd.DataFrame({
        "neuron_id": np.arange(n_neurons, dtype=np.int64), "experiment_id": np.arange(n_neurons) // 100,
        "container_id": np.arange(n_neurons) // 300, "area": np.array(AREAS)[np.arange(n_neurons) % len(AREAS)],
        "cre_line": "Cux2-CreERT2", "imaging_depth": 175, "cortical_layer": "L2/3", "reliability": reliability,
        "cc_max": np.sqrt(reliability), "image_selective": True, "running_modulated": False, "selected": True,
    })


def site_effects(n_boot: int) -> dict[tuple[str, str, str], np.ndarray]:
    """Each replicate's resample effect at a site, shared by every model (seeded by the site alone)."""
    effects = {}
    for i, (method, rule, area) in enumerate((m, r, a) for m in ("rsa", "regression") for r in ("max", "cv")
                                             for a in AREAS):
        effects[(method, rule, area)] = 0.03 * np.random.default_rng([7, i]).normal(size=n_boot)
    return effects


def model_tables(index: int, n_layers: int, neurons: pd.DataFrame, n_boot: int,
                 effects: dict[tuple[str, str, str], np.ndarray]) -> dict[str, pd.DataFrame]:
    """One model's tables of :data:`deepmouse.scoring.run.MODEL_TABLES`, with ``score_model``'s columns and dtypes."""
    rng = np.random.default_rng([index, 3])
    name = model_id(index)
    quality = rng.uniform(0.05, 0.4)
    layer_index = np.arange(n_layers, dtype=np.int64)
    depth = np.linspace(0, 1, n_layers)
    profile = quality * np.exp(-((depth - rng.uniform(0.3, 0.8)) / 0.3) ** 2)  # best somewhere mid-depth
    neuron_ids = neurons["neuron_id"].to_numpy()
    areas = neurons["area"].to_numpy()
    n_neurons = len(neuron_ids)
    per_area = pd.Series(areas).value_counts()
    rsa = pd.concat([pd.DataFrame({
        "model_id": name, "layer_index": layer_index, "site_kind": "area", "site": area, "metric": "pearson",
        "score": profile + 0.02 * rng.normal(size=n_layers), "noise_ceiling": 0.8, "n_neurons": int(per_area[area]),
    }) for area in AREAS], ignore_index=True)
    tuning = rng.uniform(0.2, 1.0, n_neurons)  # how well each neuron is predicted at the best layer
    regression = pd.DataFrame({
        "model_id": name, "layer_index": np.repeat(layer_index, n_neurons), "neuron_id": np.tile(neuron_ids, n_layers),
        "alpha": 10.0 ** rng.integers(-1, 4, n_layers * n_neurons).astype(np.float64),
        "score": (profile[:, None] * tuning[None, :] + 0.1 * rng.normal(size=(n_layers, n_neurons))).ravel(),
    })
    summary, replicates, neuron_rows = [], [], []
    best = int(np.argmax(profile))
    for method in ("rsa", "regression"):
        for rule in ("max", "cv"):
            for area in AREAS:
                score = profile[best] - (0.02 if rule == "cv" else 0.0) + 0.01 * rng.normal()
                values = score + effects[(method, rule, area)] + 0.02 * rng.normal(size=n_boot)
                low, high = np.percentile(values, [2.5, 97.5])
                summary.append({
                    "model_id": name, "method": method, "layer_selection": rule, "site_kind": "area", "site": area,
                    "score": float(score), "ci_low": float(low), "ci_high": float(high),
                    "normalized_score": float(score / np.sqrt(0.8)), "noise_ceiling": 0.8,
                    "best_layer_index": best, "best_layer_depth": float(depth[best]), "layer_stability": 1.0,
                    "n_neurons": int(per_area[area]),
                })
                replicates.append(pd.DataFrame({
                    "model_id": name, "method": method, "layer_selection": rule, "site_kind": "area", "site": area,
                    "replicate": np.arange(n_boot, dtype=np.int32), "value": values,
                }))
        if method == "regression":
            for rule in ("max", "cv"):
                for area in AREAS:
                    columns = np.flatnonzero(areas == area)
                    score = profile[best] * tuning[columns] + 0.1 * rng.normal(size=columns.size)
                    neuron_rows.append(pd.DataFrame({
                        "model_id": name, "method": "regression", "layer_selection": rule,
                        "neuron_id": neuron_ids[columns], "score": score,
                        "normalized_score": score / np.sqrt(neurons["reliability"].to_numpy()[columns]),
                    }))
    return {
        "rsa_scores": rsa, "regression_scores": regression, "model_scores": pd.DataFrame(summary),
        "neuron_scores": pd.concat(neuron_rows, ignore_index=True),
        "bootstrap_replicates": pd.concat(replicates, ignore_index=True),
    }


def write_project(root: Path, n_models: int, n_layers: int, n_neurons: int, n_boot: int) -> float:
    """Write the folders of models ``0 .. n_models - 1`` not there yet, and the neurons; return seconds spent."""
    from deepmouse.scoring.run import _write_model_folder, model_folder, scores_key

    started = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    neurons_path = root / "data" / "neurons" / "neurons.parquet"
    neurons = neurons_table(n_neurons)
    if not neurons_path.is_file():
        neurons_path.parent.mkdir(parents=True, exist_ok=True)
        neurons.to_parquet(neurons_path, index=False)
        rng = np.random.default_rng(2)
        means = root / "data" / "responses" / "means.parquet"
        means.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({
            "neuron_id": np.repeat(neurons["neuron_id"].to_numpy(), N_STIMULI),
            "stimulus_index": np.tile(np.arange(N_STIMULI), n_neurons),
            "mean_response": rng.normal(size=N_STIMULI * n_neurons), "n_trials": 50,
        }).to_parquet(means, index=False)
    cfg = scoring_config(n_boot)
    reference = reference_tables()
    effects = site_effects(n_boot)
    features = parse_params({}).features
    inputs = {name: {"path": f"data/{name}", "sha256": "0" * 64} for name in ("stimuli", "neurons", "means", "trials")}
    scores_dir = root / "data" / "scores"
    for index in range(n_models):
        folder = model_folder(scores_dir, model_id(index))
        if (folder / "key.json").is_file():
            continue
        tables = model_tables(index, n_layers, neurons, n_boot, effects)
        check_format(tables, reference)
        key = scores_key(model_id(index), "synthetic", inputs, features, cfg)
        _write_model_folder(folder, tables, key)
    return time.perf_counter() - started


def small_store_tables(model_ids: list[str], n_layers: int, neurons: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``runs``, ``models`` and ``layers``, as ``run_store`` makes them from the feature entries."""
    layers = pd.DataFrame({
        "model_id": np.repeat(model_ids, n_layers), "layer_index": np.tile(np.arange(n_layers), len(model_ids)),
        "layer_name": [f"layer{j}" for j in range(n_layers)] * len(model_ids), "module_type": "Conv2d",
        "n_features": 1000, "depth": np.tile(np.linspace(0, 1, n_layers), len(model_ids)),
    })
    return {
        "runs": pd.DataFrame([{
            "run_id": "0" * 16, "source": "simulated", "n_experiments": 1, "experiments": "[1]",
            "experiments_digest": "e" * 64, "params_digest": "p" * 64, "package_versions": "{}",
            "code_digest": "c" * 64, "code_revision": None, "dvc_lock_digest": None,
            "trial_responses": True, "extra_areas": "[]", "created": pd.Timestamp("2026-01-01")}]),
        "models": pd.DataFrame({
            "model_id": model_ids, "display_name": model_ids, "family": "convolutional", "source": "torchvision",
            "architecture": "synthetic", "training": "random", "training_category": "random", "task_cluster": None,
            "n_params": 1_000_000, "weights_sha256": None, "imagenet_top1": None, "imagenet_top1_source": None}),
        "layers": layers, "neurons": neurons,
    }


# ---------------------------------------------------------------------------- the stages
def stage_comparisons(root: Path, model_ids: list[str], n_boot: int) -> str:
    """As :func:`deepmouse.scoring.run.score_models` after scoring: read, compare (keeping what still holds), write."""
    from deepmouse.scoring.run import compare_scored_models

    lines = []
    _, table = compare_scored_models(root / "data" / "scores", model_ids, scoring_config(n_boot), progress=lines.append)
    return f"{len(table)} pairs x sites, {int(table['distinguishable'].sum())} distinguishable; {lines[-1]}"


def stage_old_comparisons(root: Path, model_ids: list[str], n_boot: int, rev: str) -> str:
    """``compare_models`` of git revision ``rev`` on the same tables, written beside the stage's table."""
    from deepmouse.scoring.run import read_model_tables

    scores_dir = root / "data" / "scores"
    table = old_compare_models(rev)(read_model_tables(scores_dir, model_ids, "model_scores"),
                                    read_model_tables(scores_dir, model_ids, "bootstrap_replicates"),
                                    scoring_config(n_boot))
    table.to_parquet(scores_dir / OLD_COMPARISONS_FILE, index=False)
    return f"{len(table)} pairs x sites, {int(table['distinguishable'].sum())} distinguishable"


def stage_store(root: Path, model_ids: list[str], n_layers: int) -> str:
    """The tables of :func:`deepmouse.pipeline.run_store`, read as it reads them, then built."""
    from deepmouse.scoring.run import COMPARISONS_FILE, model_table_files, read_model_tables
    from deepmouse.store.build import PARQUET_TABLES, ParquetFiles, build_store

    scores_dir = root / "data" / "scores"
    neurons = pd.read_parquet(root / "data" / "neurons" / "neurons.parquet")
    tables = {
        **small_store_tables(model_ids, n_layers, neurons),
        "rsa_scores": read_model_tables(scores_dir, model_ids, "rsa_scores"),
        "model_scores": read_model_tables(scores_dir, model_ids, "model_scores").assign(source="simulated"),
        "model_comparisons": pd.read_parquet(scores_dir / COMPARISONS_FILE),
        **{name: ParquetFiles(model_table_files(scores_dir, model_ids, name)) for name in PARQUET_TABLES},
    }
    counts = build_store(root / "data" / "store" / "unchecked.duckdb", tables, REPO / "sql")
    return ", ".join(f"{name} {n}" for name, n in counts.items() if name != "runs")


def stage_checks(root: Path) -> str:
    from deepmouse.pipeline import run_checks_stage

    data = root / "data"
    return run_checks_stage(types.SimpleNamespace(checks=CHECKS), data / "store" / "unchecked.duckdb",
                            data / "responses" / "means.parquet", REPO / "sql" / "checks",
                            root / "reports" / "checks.json", data / "deepmouse.duckdb", data / "checks",
                            data / "published")


def stage_report(root: Path) -> str:
    from deepmouse.pipeline import run_report

    return run_report(root / "data" / "deepmouse.duckdb", root / "reports")


def old_compare_models(rev: str):
    """``compare_models`` of git revision ``rev``."""
    source = subprocess.run(["git", "show", f"{rev}:deepmouse/scoring/comparisons.py"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    with tempfile.TemporaryDirectory(prefix="old-comparisons-") as folder:
        path = Path(folder) / "old_comparisons.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("old_comparisons", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module.compare_models


def compare_with_old(root: Path) -> float:
    """The largest difference between the old code's comparisons and the current ones; AssertionError unless equal
    (same pairs, same verdicts, numbers to 1e-12)."""
    from deepmouse.scoring.run import COMPARISONS_FILE

    scores_dir = root / "data" / "scores"
    key = ["method", "layer_selection", "site_kind", "site", "model_a", "model_b"]
    new = pd.read_parquet(scores_dir / COMPARISONS_FILE).sort_values(key).reset_index(drop=True)
    old = pd.read_parquet(scores_dir / OLD_COMPARISONS_FILE).sort_values(key).reset_index(drop=True)
    (scores_dir / OLD_COMPARISONS_FILE).unlink()
    pd.testing.assert_frame_equal(new[key + ["distinguishable"]], old[key + ["distinguishable"]])
    numbers = ["difference", "ci_low", "ci_high", "p_value", "q_value"]
    largest = float(np.abs(new[numbers].to_numpy() - old[numbers].to_numpy()).max())
    if not largest <= 1e-12:
        raise AssertionError(f"old and current comparisons differ by up to {largest}")
    return largest


# ---------------------------------------------------------------------------- measurements
def run_child(kind: str, root: Path, n_models: int, n_layers: int, n_boot: int, old_rev: str) -> None:
    """One measurement in this (fresh) process; prints its JSON line last."""
    model_ids = [model_id(i) for i in range(n_models)]
    # Everything the stage imports, imported before the peak is restarted: the stage's own memory is measured.
    for module in ("deepmouse.pipeline", "deepmouse.quality.gate", "deepmouse.report.plots",
                   "deepmouse.scoring.run", "deepmouse.store.build"):
        importlib.import_module(module)

    if kind == "comparisons, first":
        # The stage's first comparison: nothing kept (the +1 model run that follows keeps it).
        for name in ("model_comparisons.parquet", "model_comparisons.json"):
            (root / "data" / "scores" / name).unlink(missing_ok=True)
    reset = reset_peak_rss()
    base = peak_rss_bytes()
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    if kind == "comparisons, first":
        note = stage_comparisons(root, model_ids[:-1], n_boot)
    elif kind == "comparisons (old)":
        note = stage_old_comparisons(root, model_ids, n_boot, old_rev)
    elif kind.startswith("comparisons"):
        note = stage_comparisons(root, model_ids, n_boot)
    elif kind == "store":
        note = stage_store(root, model_ids, n_layers)
    elif kind.startswith("checks"):
        note = stage_checks(root)
    elif kind == "report":
        note = stage_report(root)
    else:
        raise ValueError(f"unknown measurement {kind!r}")
    seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu_started
    print(json.dumps({"kind": kind, "seconds": seconds, "cpu_seconds": cpu, "peak_rss_mib": peak_rss_bytes() / 2**20,
                      "above_imports_mib": (peak_rss_bytes() - base) / 2**20 if reset else None, "note": note}))


def _cpu_seconds() -> float:
    """User + system CPU time of this process, all its threads (on a shared machine, less load-bound than wall time)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(kind: str, root: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", kind, "--root", str(root), "--models", str(args.models),
               "--layers", str(args.layers), "--neurons", str(args.neurons), "--boot", str(args.boot),
               "--old-rev", args.old_rev or ""]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{done.stderr[-3000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    validated = [line for line in done.stdout.splitlines() if line.startswith("per-neuron tables:")]
    if validated:  # the checks: how many models were validated, how many verdicts reused
        row["note"] = validated[-1].removeprefix("per-neuron tables: ")
    return row


def format_table(report: dict) -> str:
    lines = ["| models | run | wall s | CPU s | peak RSS MiB | above imports MiB | what |",
             "|---|---|---|---|---|---|---|"]
    for row in report["runs"]:
        above = "" if row["above_imports_mib"] is None else f"{row['above_imports_mib']:,.0f}"
        cpu = f"{row['cpu_seconds']:.1f}" if "cpu_seconds" in row else ""
        lines.append(f"| {report['models']} | {row['kind']} | {row['seconds']:.1f} | {cpu} | "
                     f"{row['peak_rss_mib']:,.0f} | {above} | {row['note'][:90]} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--layers", type=int, default=50)
    parser.add_argument("--neurons", type=int, default=6619)
    parser.add_argument("--boot", type=int, default=1000, help="scoring.bootstrap.n")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="the synthetic project (kept, reused)")
    parser.add_argument("--old-rev", default="", help="also time compare_models of this git revision")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for every number")
    parser.add_argument("--stages", nargs="*", default=None, help="only these (comparisons, store, checks, report)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        run_child(args.child, args.root, args.models, args.layers, args.boot, args.old_rev)
        return
    root = args.root
    # The store and the report are this size's, every run. The checks' verdicts and snapshot are
    # keyed by content: a model checked in a run of fewer models is not validated again.
    for stale in ("data/store", "data/deepmouse.duckdb", "reports") if not args.stages or "store" in args.stages else ():
        path = root / stale
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    written = write_project(root, args.models, args.layers, args.neurons, args.boot)
    print(f"synthetic project ready in {written:.1f} s: {args.models} models under {root}", flush=True)
    kinds = ["comparisons, first", "comparisons, +1 model", "comparisons, nothing changed",
             *(["comparisons (old)"] if args.old_rev else []), "store", "checks", "checks, nothing changed", "report"]
    runs = []
    for kind in kinds:
        if args.stages and not any(kind.startswith(stage) for stage in args.stages):
            continue
        row = measure(kind, root, args)
        runs.append(row)
        print(f"{kind}: {row['seconds']:.1f} s ({row['cpu_seconds']:.1f} s CPU), peak {row['peak_rss_mib']:,.0f} MiB - {row['note']}", flush=True)
        if kind == "comparisons (old)":
            runs[-1]["largest_difference"] = compare_with_old(root)
            print(f"old and current tables agree; largest difference {runs[-1]['largest_difference']:.2e}", flush=True)
    report = {"date": datetime.date.today().isoformat(), "machine": platform.node(), "python": platform.python_version(),
              "models": args.models, "layers": args.layers, "neurons": args.neurons, "boot": args.boot, "runs": runs}
    print(format_table(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
