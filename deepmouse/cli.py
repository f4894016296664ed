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
from deepmouse.errors import DeepmouseError

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

    frame = pd.DataFrame([dataclasses.asdict(entry) for entry in load_zoo()])
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
        typer.echo(frame[leading].to_string(index=False))
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
def scores(features: Path = typer.Option(...), neurons: Path = typer.Option(...), responses: Path = typer.Option(...),
           out: Path = typer.Option(...), params: Path = PARAMS) -> None:
    """RSA and regression scores for every model of zoo.models."""
    _run(lambda: pipeline.run_scores(load_params(params), features, neurons, responses, out))


@app.command()
def store(scores: Path = typer.Option(...), neurons: Path = typer.Option(...), features: Path = typer.Option(...),
          sql: Path = typer.Option(Path("sql")), out: Path = typer.Option(...), params: Path = PARAMS) -> None:
    """Build the DuckDB results store."""
    _run(lambda: pipeline.run_store(load_params(params), scores, neurons, features, sql, out))


@app.command()
def checks(db: Path = typer.Option(...), means: Path = typer.Option(...),
           sql_checks: Path = typer.Option(Path("sql/checks")), out: Path = typer.Option(...),
           params: Path = PARAMS) -> None:
    """Run the data-quality gates."""
    _run(lambda: pipeline.run_checks_stage(load_params(params), db, means, sql_checks, out))


@app.command()
def report(db: Path = typer.Option(...), out: Path = typer.Option(...)) -> None:
    """Ranking figure, layer-profile data and metrics."""
    _run(lambda: pipeline.run_report(db, out))


@app.command()
def query(sql: str = typer.Argument(..., help="a SELECT statement, e.g. 'select * from model_ranking'"),
          db: Path = typer.Option(Path("data/deepmouse.duckdb"), help="results store"),
          format: Format = typer.Option(Format.table, "--format")) -> None:
    """Run a read-only SQL query on the results store."""
    import duckdb

    from deepmouse.store.build import connect

    def answer() -> str:
        if not db.exists():
            raise DeepmouseError(f"{db}: no results store yet; run `make run` (dvc repro) first")
        con = connect(db, read_only=True)
        try:
            frame = con.execute(sql).fetchdf()
        except duckdb.Error as err:
            raise DeepmouseError(f"query failed: {err}") from None
        finally:
            con.close()
        return frame.to_csv(index=False).rstrip() if format is Format.csv else frame.to_string(index=False)

    _run(answer)


if __name__ == "__main__":
    app()
