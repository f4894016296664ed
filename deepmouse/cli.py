"""The ``deepmouse`` command line: the same functions the DVC stages call, plus the zoo
listing and read-only SQL queries on the results store."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Callable, Optional

import typer

from deepmouse import pipeline
from deepmouse.config import load_params
from deepmouse.errors import DeepmouseError, StoreError

app = typer.Typer(help="Benchmark deep vision models against mouse visual cortex.", no_args_is_help=True)
zoo_app = typer.Typer(help="The model zoo registry.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")

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
) -> None:
    """List the zoo's models, optionally filtered."""
    import dataclasses

    import pandas as pd

    from deepmouse.models.registry import load_zoo

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


@app.command()
def check_params(params: Path = PARAMS) -> None:
    """Validate a params file and say what it will run."""
    _run(lambda: _describe(load_params(params)))


def _describe(p) -> str:
    return (f"params OK: source {p.data.source}, {len(p.zoo.models)} models ({', '.join(p.zoo.models)}), "
            f"reliability >= {p.neurons.reliability_threshold}")


@app.command()
def pull(out: Path = typer.Option(...), params: Path = PARAMS) -> None:
    """Fetch or simulate the raw NWB files of data.source into OUT."""
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
           params: Path = PARAMS) -> None:
    """Run the data-quality gates on DB; publish it at PUBLISH only if all pass."""
    _run(lambda: pipeline.run_checks_stage(load_params(params), db, means, sql_checks, out, publish))


@app.command()
def report(db: Path = typer.Option(...), out: Path = typer.Option(...)) -> None:
    """Ranking figure, layer-profile data and metrics."""
    _run(lambda: pipeline.run_report(db, out))


@app.command()
def query(sql: str = typer.Argument(..., help="a SELECT statement, e.g. 'select * from model_ranking'"),
          db: Path = typer.Option(Path("data/deepmouse.duckdb"), help="results store"),
          format: Format = typer.Option(Format.table, "--format"),
          out: Optional[Path] = typer.Option(None, "--out", help="write the result to this file (in --format) "
                                                                  "instead of the terminal")) -> None:
    """Run a read-only SQL query on the results store.

    The query sees the store's tables and views and nothing else: it cannot read or
    write files, attach databases, install or load extensions, or change settings.
    Save a result with --out FILE.
    """
    def answer() -> str:
        if not sql.strip(" \t\r\n;"):
            raise DeepmouseError('empty query; give a SELECT statement, e.g. "select * from model_ranking"')
        from deepmouse.store.build import open_store, restore_hint

        if not db.exists():
            raise DeepmouseError(f"{db}: no results store yet; run `make run` (dvc repro) first, or {restore_hint(db)}")
        open_store(db).close()  # every table there, or one line naming the file and how to restore it
        if out is not None and out.resolve() == db.resolve():
            raise DeepmouseError(f"--out {out}: that is the results store itself; name another file")
        frame = _query_store(db, sql)
        text = frame.to_csv(index=False).rstrip() if format is Format.csv else frame.to_string(index=False)
        if out is None:
            return text
        try:
            out.write_text(text + "\n")
        except OSError as err:
            raise DeepmouseError(f"--out {out}: cannot write: {err.strerror or err}") from None
        return f"{len(frame)} rows written to {out}"

    _run(answer)


# DuckDB's access to files, extensions and the network is off and the configuration locked,
# so a query reads the store it was given and nothing else (COPY ... TO, read_csv('/etc/passwd'),
# ATTACH, INSTALL / LOAD and SET are all refused); results leave only through our own writer.
_QUERY_CONFIG = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "lock_configuration": True,
}


def _query_store(db: Path, sql: str):
    """Run ``sql`` on the store opened read-only and sandboxed; a DataFrame, or one-line errors."""
    import duckdb

    from deepmouse.store.build import open_store

    open_store(db).close()  # a damaged or incomplete store is named, with how to restore it
    try:
        con = duckdb.connect(str(db), read_only=True, config=_QUERY_CONFIG)
    except duckdb.Error as err:
        if "lock" in str(err).lower():
            raise StoreError(f"{db}: locked by another process ({_first_paragraph(err)}); close the other "
                             "DuckDB session (or open it read-only) and run again") from None
        raise StoreError(f"{db}: cannot open: {_first_paragraph(err)}") from None
    try:
        result = con.execute(sql)
        if result is None or result.description is None:
            raise DeepmouseError("the query returned no table; `deepmouse query` answers SELECT-like statements")
        return result.fetchdf()
    except duckdb.Error as err:
        message = _first_paragraph(err)
        if isinstance(err, duckdb.PermissionException) or "locked" in message or "read-only" in message:
            raise DeepmouseError(f"query refused: {message} (`deepmouse query` reads the results store only: "
                                 "no files, other databases, extensions or settings; save results with --out FILE)"
                                 ) from None
        raise DeepmouseError(f"query failed: {message}") from None
    finally:
        con.close()


def _first_paragraph(err: Exception) -> str:
    # DuckDB appends the query with a caret under the fault after a blank line: one line is enough.
    return " ".join(str(err).split("\n\n")[0].split())


if __name__ == "__main__":
    app()
