"""The ``deepmouse`` command line: the same functions the DVC stages call, plus the zoo
listing, read-only SQL queries on the results store and the comparison of two stores."""

from __future__ import annotations

import csv
import sys
from enum import Enum
from pathlib import Path
from typing import Callable, Optional

import typer

from deepmouse import pipeline
from deepmouse.config import load_params
from deepmouse.errors import DeepmouseError

app = typer.Typer(help="Benchmark deep vision models against mouse visual cortex.", no_args_is_help=True)
zoo_app = typer.Typer(help="The model zoo registry.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")
remote_app = typer.Typer(help="Results shared through a DVC remote, checked against dvc.lock.", no_args_is_help=True)
app.add_typer(remote_app, name="remote")

PARAMS = typer.Option(Path("params.yaml"), "--params", help="params file")


class Format(str, Enum):
    table = "table"
    csv = "csv"


def _run(step: Callable[[], str]) -> None:
    try:
        typer.echo(step())
    except DeepmouseError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None


@zoo_app.command("list")
def zoo_list(
    format: Format = typer.Option(Format.table, "--format", help="table or csv"),
    family: Optional[str] = typer.Option(None, help="e.g. convolutional, transformer, mlp-mixer, hybrid"),
    source: Optional[str] = typer.Option(None, help="torchvision, timm, taskonomy, vissl or dino"),
    training: Optional[str] = typer.Option(None, help="e.g. random, supervised-imagenet, or a prefix such as taskonomy"),
    presets: bool = typer.Option(False, "--presets", help="list the presets (named sets of models) instead"),
) -> None:
    """List the zoo's models, optionally filtered, or its presets (--presets)."""
    import dataclasses

    import pandas as pd

    from deepmouse.models.registry import load_zoo

    if presets:
        _list_presets(format)
        return

    # verified: how a trained checkpoint is checked (sha256, prefix or no; empty for random models).
    frame = pd.DataFrame([dict(dataclasses.asdict(entry), verified=entry.verified) for entry in load_zoo()])
    leading = ["model_id", "display_name", "family", "source", "training"]
    frame = frame[leading + [c for c in frame.columns if c not in leading]]
    if family:
        frame = frame[frame["family"] == family]
    if source:
        frame = frame[frame["source"] == source]
    if training:
        frame = frame[frame["training"].str.startswith(training)]
    if format is Format.csv:
        frame.to_csv(sys.stdout, index=False)
    else:
        typer.echo(frame[leading + ["verified"]].to_string(index=False))
        typer.echo(f"{len(frame)} models")


def _list_presets(format: Format) -> None:
    from deepmouse.models.presets import load_presets

    rows = [(preset.name, str(len(preset.model_ids)), preset.description) for preset in load_presets().values()]
    if format is Format.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerows([("name", "count", "description"), *rows])
    else:
        typer.echo("\n".join(_aligned(rows)))


@zoo_app.command("use")
def zoo_use(names: list[str] = typer.Argument(..., help="presets and model ids, e.g. reference, or taskonomy alexnet"),
            params: Path = PARAMS) -> None:
    """Set zoo.models in the params file to the models NAMES stand for.

    Presets are written out as their model ids (DVC makes one features stage per entry
    of zoo.models as written); the rest of the file, comments included, is kept as it is.
    """
    from deepmouse.config import set_zoo_models

    def use() -> str:
        model_ids = set_zoo_models(params, names)
        return f"{params}: zoo.models set to {len(model_ids)} models ({_abbreviated(model_ids)})"

    _run(use)


def _abbreviated(model_ids, shown: int = 5) -> str:
    return ", ".join(model_ids[:shown]) + (f", … {len(model_ids) - shown} more" if len(model_ids) > shown else "")


@remote_app.command("add")
def remote_add(name: str = typer.Argument(..., help="the remote's name, e.g. shared"),
               url: str = typer.Argument(..., help="a folder every machine mounts, s3://bucket/path, ssh://..."),
               project: Path = typer.Option(Path("."), "--project", help="the project root")) -> None:
    """Add URL as the default DVC remote NAME with verify on (dvc remote add -d -f, then modify verify true)."""
    from deepmouse.sharing import add_remote

    _run(lambda: add_remote(project, name, url))


@remote_app.command("pull")
def remote_pull(targets: list[str] = typer.Argument(None, help="stages or paths, as for dvc pull; all if none"),
                remote: Optional[str] = typer.Option(None, "--remote", "-r", help="the remote; the default if not given"),
                jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="parallel transfers, as for dvc pull"),
                project: Path = typer.Option(Path("."), "--project", help="the project root")) -> None:
    """dvc pull, then check every pulled file against dvc.lock: each damaged one is named, fetched again
    if the remote's copy is intact, else removed here (with its cache object) for dvc repro to recompute."""
    from deepmouse.sharing import pull_verified

    _run(lambda: pull_verified(project, remote=remote, targets=targets or (), jobs=jobs))


@app.command()
def check_params(params: Path = PARAMS) -> None:
    """Validate a params file and say what it will run."""
    _run(lambda: _describe(load_params(params)))


def _describe(p) -> str:
    return (f"params OK: source {p.data.source}, {len(p.zoo.models)} models ({', '.join(p.zoo.models)}), "
            f"reliability >= {p.neurons.reliability_threshold}")


@app.command()
def pull(out: Path = typer.Option(...), params: Path = PARAMS) -> None:
    """Fetch or simulate the raw NWB files of data.source into OUT (source table: check and copy the tables)."""
    _run(lambda: pipeline.run_pull(load_params(params), out))


@app.command()
def stimuli(raw: Path = typer.Option(...), out: Path = typer.Option(...)) -> None:
    """Extract the 119 stimuli (blank last) from pulled NWB files."""
    _run(lambda: pipeline.run_stimuli(raw, out))


@app.command()
def responses(raw: Path = typer.Option(...), out: Path = typer.Option(...), params: Path = PARAMS) -> None:
    """Compute per-trial responses and per-condition means."""
    _run(lambda: pipeline.run_responses(load_params(params), raw, out))


@app.command()
def neurons(responses: Path = typer.Option(...), out: Path = typer.Option(...), counts: Path = typer.Option(...),
            params: Path = PARAMS) -> None:
    """Reliability, selectivity and selection of every neuron."""
    _run(lambda: pipeline.run_neurons(load_params(params), responses, out, counts))


@app.command()
def features(model: str = typer.Option(...), stimuli: Path = typer.Option(...), out: Path = typer.Option(...),
             params: Path = PARAMS) -> None:
    """Per-layer statistics of one zoo model."""
    _run(lambda: pipeline.run_features(load_params(params), model, stimuli, out))


@app.command("prefetch-features")
def prefetch_features(stimuli: Path = typer.Option(Path("data/stimuli"), help="the stimuli stage's output"),
                      store: Optional[Path] = typer.Option(None, help="entries by key digest (default: data/feature_store, "
                                                                      "where the features stages look)"),
                      features: Path = typer.Option(Path("data/features"), help="the features stages' outputs: "
                                                    "a model whose output there is current is not computed"),
                      params: Path = PARAMS) -> None:
    """Compute every model's feature statistics as parallel tasks (compute.*) before `dvc repro` copies them."""
    from deepmouse.features.cache import PREFETCH_DIR
    from deepmouse.features.prefetch import prefetch_features as prefetch

    _run(lambda: prefetch(load_params(params), stimuli, store or PREFETCH_DIR, features_dir=features))


@app.command()
def scores(features: Path = typer.Option(...), stimuli: Path = typer.Option(...), neurons: Path = typer.Option(...),
           responses: Path = typer.Option(...), out: Path = typer.Option(...), params: Path = PARAMS) -> None:
    """RSA and regression scores for every model of zoo.models."""
    _run(lambda: pipeline.run_scores(load_params(params), features, stimuli, neurons, responses, out))


@app.command()
def store(scores: Path = typer.Option(...), neurons: Path = typer.Option(...), features: Path = typer.Option(...),
          stimuli: Path = typer.Option(...), raw: Path = typer.Option(...),
          params_json: Path = typer.Option(Path("data/params.json")), sql: Path = typer.Option(Path("sql")),
          out: Path = typer.Option(...), params: Path = PARAMS) -> None:
    """Build the DuckDB results store at OUT (unchecked: `checks` publishes it)."""
    _run(lambda: pipeline.run_store(load_params(params), scores, neurons, features, stimuli, raw, params_json, sql, out))


@app.command()
def checks(db: Path = typer.Option(...), means: Path = typer.Option(...),
           sql_checks: Path = typer.Option(Path("sql/checks")), out: Path = typer.Option(...),
           publish: Path = typer.Option(..., help="where the store goes if every check passes (the results users read)"),
           verdicts: Optional[Path] = typer.Option(
               None, help="folder of per-model verdicts kept across runs (the stage's data/checks); "
                          "without it every model is validated"),
           params: Path = PARAMS) -> None:
    """Run the data-quality gates on DB; publish it at PUBLISH only if all pass."""
    _run(lambda: pipeline.run_checks_stage(load_params(params), db, means, sql_checks, out, publish, verdicts))


@app.command()
def report(db: Path = typer.Option(...), out: Path = typer.Option(...)) -> None:
    """Ranking figure, layer-profile data and metrics."""
    _run(lambda: pipeline.run_report(db, out))


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


@app.command("sql")
def sql_command(
    query: Optional[str] = typer.Argument(None, help="SQL that reads, e.g. 'select * from model_ranking'",
                                          show_default=False),
    file: Optional[Path] = typer.Option(None, "--file", help="read the SQL from this file instead"),
    views: bool = typer.Option(False, "--views", help="list the tables and views, one line each, and exit"),
    db: Path = typer.Option(Path("data/deepmouse.duckdb"), help="results store"),
    format: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table, csv, json or parquet"),
    out: Optional[Path] = typer.Option(None, "--out", help="write the result to this file (in --format) instead "
                                                            "of the terminal; parquet needs it"),
    sql_dir: Path = typer.Option(Path("sql"), "--sql-dir", help="SQL the store was built from (descriptions for --views)"),
) -> None:
    """Run read-only SQL on the results store, or list its tables and views (--views).

    The SQL sees the store's tables and views and nothing else: statements that write
    (CREATE, INSERT, COPY, ...) are refused, and it cannot read files, attach databases,
    install or load extensions, or change settings. Save a result with --out FILE.
    """
    def answer() -> str:
        from deepmouse.store import sql as store_sql

        if sum((query is not None, file is not None, views)) != 1:
            raise DeepmouseError("give one of: a query, --file FILE, or --views")
        if format is OutputFormat.parquet and out is None:
            raise DeepmouseError("--format parquet writes a file: name it with --out FILE")
        if out is not None and db.exists() and out.resolve() == db.resolve():
            raise DeepmouseError(f"--out {out}: that is the results store itself; name another file")
        if views:
            frame = store_sql.describe_relations(db, sql_dir)
            if out is None and format is OutputFormat.table:
                return "\n".join(_aligned(frame.itertuples(index=False)))
        else:
            frame = store_sql.query_store(db, _read_sql(file) if file is not None else query)
        if out is None:
            return store_sql.render(frame, format.value)
        store_sql.write_result(frame, format.value, out)
        return f"{len(frame)} rows written to {out}"

    _run(answer)


app.command("query", help="The same as `deepmouse sql` (its earlier name).")(sql_command)


@app.command("diff")
def diff_command(
    a: Path = typer.Argument(..., help="a results store (data/deepmouse.duckdb) or the project folder holding one"),
    b: Path = typer.Argument(..., help="the store (or project folder) to compare it with"),
    tolerance: float = typer.Option(1e-6, "--tolerance",
                                    help="numbers agree when |A - B| <= tolerance x max(1, |A|, |B|)"),
    rows: int = typer.Option(5, "--rows", help="differing rows shown per table and ranking view"),
    out: Optional[Path] = typer.Option(None, "--out", help="also write the report here (JSON for a .json name)"),
) -> None:
    """Do two runs agree within a tolerance? Models, neurons, sites, every table and every ranking.

    Exit status 0 when everything agrees within the tolerance, 1 when something differs
    (the first differing rows are printed), 2 when an input is missing or not a store.
    """
    from deepmouse.store.diff import diff_stores, find_store
    from deepmouse.store.diff_report import write_report

    try:
        if out is not None and out.exists() and any(out.resolve() == find_store(p).resolve() for p in (a, b)):
            raise DeepmouseError(f"--out {out}: that is one of the stores compared; name another file")
        found = diff_stores(a, b, tolerance=tolerance, rows=rows)
        typer.echo(found.to_text())
        if out is not None:
            write_report(found, out)
            typer.echo(f"report written to {out}")
    except DeepmouseError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(0 if found.agrees else 1)


def _read_sql(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise DeepmouseError(f"--file {path}: cannot read: {getattr(err, 'strerror', None) or err}") from None


def _aligned(rows) -> list[str]:
    """Rows of strings as lines, every column but the last padded to its widest value."""
    rows = [tuple(map(str, row)) for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)] if rows else []
    return ["  ".join([cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]) for row in rows]


@app.command()
def deps(write: bool = typer.Option(False, "--write", help="rewrite the stages' code deps in place"),
         check: bool = typer.Option(False, "--check", help="fail, naming stage and file, where they differ"),
         dvc_yaml: Path = typer.Option(Path("dvc.yaml"), "--dvc-yaml", help="the pipeline file")) -> None:
    """Each stage's code deps in dvc.yaml: its script and the script's import closure.

    --check exits 1 with one line per stage whose listed code deps differ from those derived;
    --write rewrites them (data deps, comments and layout kept). Neither: list them.
    """
    def answer() -> str:
        from deepmouse.errors import CodeDepsError
        from deepmouse.stagedeps import check_stage_deps, derive_stage_deps, write_stage_deps

        if write and check:
            raise DeepmouseError("give one of --write and --check")
        if write:
            stale = write_stage_deps(dvc_yaml)
            return "\n".join([f"{dvc_yaml}: rewrote the code deps of {len(stale)} stages", *(
                f"  {deps.describe()}" for deps in stale)]) if stale else f"{dvc_yaml}: code deps already current"
        if check:
            stale = check_stage_deps(dvc_yaml)
            if stale:
                raise CodeDepsError("\n".join([f"{dvc_yaml}: code deps differ from the import closure "
                                                "(`deepmouse deps --write` rewrites them):",
                                                *(f"  {deps.describe()}" for deps in stale)]))
            return f"{dvc_yaml}: code deps current"
        return "\n".join(f"{deps.stage}: {' '.join(deps.derived)}" for deps in derive_stage_deps(dvc_yaml))

    _run(answer)


if __name__ == "__main__":
    app()
