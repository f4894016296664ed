"""The sandboxed query path against DuckDB's own Parquet reader, on the per-neuron tables.

``deepmouse sql`` cannot let SQL open files (:func:`deepmouse.store.build.open_query_connection`),
so it serves ``regression_scores`` and ``neuron_scores`` as Arrow datasets over the same
Parquet files; a plain read-only connection (:func:`deepmouse.store.build.open_store`) reads
them through the store's ``read_parquet`` views. A synthetic project (``--models`` models ×
``--layers`` layers × ``--neurons`` neurons, one file per model and table, as the scores stage
writes them; :func:`benchmarks.checks.build_project`) is queried both ways, best of
``--repeats``, and the answers compared. Run::

    python benchmarks/query_path.py --models 20 --layers 60 --neurons 6619 --out benchmarks/results/query_path.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import tempfile
import time
from pathlib import Path

import duckdb

QUERIES = {
    "count(*)": "SELECT count(*) FROM regression_scores",
    "mean score by model": "SELECT model_id, avg(score) FROM regression_scores GROUP BY ALL ORDER BY 1",
    "one model, one layer": "SELECT avg(score) FROM regression_scores WHERE model_id = 'model_007' AND layer_index = 3",
    "one neuron, every model": "SELECT model_id, max(score) FROM regression_scores WHERE neuron_id = 1234 "
                               "GROUP BY ALL ORDER BY 1",
    "best layer per model": "SELECT model_id, layer_index, avg(score) AS s FROM regression_scores GROUP BY ALL "
                            "ORDER BY s DESC, 1, 2 LIMIT 5",
    "layer_profile view": "SELECT count(*) FROM layer_profile",
}


def _load_checks_benchmark():
    spec = importlib.util.spec_from_file_location("benchmark_checks", Path(__file__).with_name("checks.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def time_query(con: duckdb.DuckDBPyConnection, sql: str, repeats: int) -> tuple[float, list]:
    best, rows = float("inf"), []
    for _ in range(repeats):
        started = time.perf_counter()
        rows = con.execute(sql).fetchall()
        best = min(best, time.perf_counter() - started)
    return best, rows


def same_rows(a: list, b: list) -> bool:
    """Equal rows, floats to 1e-9 relative (parallel sums differ in their last bits)."""
    def same(x, y):
        if isinstance(x, float) and isinstance(y, float):
            return math.isclose(x, y, rel_tol=1e-9) or (math.isnan(x) and math.isnan(y))
        return x == y
    return len(a) == len(b) and all(len(r) == len(t) and all(map(same, r, t)) for r, t in zip(a, b))


def run_benchmark(root: Path, args: argparse.Namespace) -> dict:
    from deepmouse.store.build import open_query_connection, open_store

    _load_checks_benchmark().build_project(root, args.models, args.layers, args.neurons)
    db = root / "data" / "store.duckdb"
    results = {}
    plain, sandboxed = open_store(db), open_query_connection(db)
    try:
        n_rows = plain.execute("SELECT count(*) FROM regression_scores").fetchone()[0]
        for name, sql in QUERIES.items():
            native, native_rows = time_query(plain, sql, args.repeats)
            arrow, arrow_rows = time_query(sandboxed, sql, args.repeats)
            results[name] = {"read_parquet_s": native, "arrow_dataset_s": arrow, "ratio": arrow / native,
                             "same_answer": same_rows(native_rows, arrow_rows)}
    finally:
        plain.close()
        sandboxed.close()
    return {"rows": n_rows, "models": args.models, "layers": args.layers, "neurons": args.neurons,
            "duckdb": duckdb.__version__, "machine": platform.machine(), "repeats": args.repeats, "queries": results}


def format_table(report: dict) -> str:
    lines = [f"regression_scores: {report['rows']:,} rows in {report['models']} files",
             f"{'query':<26} {'read_parquet':>13} {'arrow dataset':>14} {'ratio':>7}  same"]
    for name, r in report["queries"].items():
        lines.append(f"{name:<26} {r['read_parquet_s']:>12.3f}s {r['arrow_dataset_s']:>13.3f}s "
                     f"{r['ratio']:>7.1f}  {r['same_answer']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--layers", type=int, default=25)
    parser.add_argument("--neurons", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--root", type=Path, help="project folder to build or reuse (default: a temporary one)")
    parser.add_argument("--out", type=Path, help="JSON file for the numbers")
    args = parser.parse_args(argv)
    if args.root is None:
        with tempfile.TemporaryDirectory() as folder:
            report = run_benchmark(Path(folder), args)
    else:
        report = run_benchmark(args.root, args)
    print(format_table(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
