"""The per-neuron tables, validated one model at a time and not again while nothing changed.

``regression_scores`` and ``neuron_scores`` (:data:`~deepmouse.store.build.PARQUET_TABLES`)
grow with layers × neurons: about 155 M rows for the whole zoo, in per-model Parquet files
behind the store's views. Loading them whole would take tens of GB, and adding one model
would validate every model again. So the gate works in three steps, none of which holds more
than one model's rows in a process:

1. **Where each model's rows are** (:func:`locate_model_rows`): one SQL aggregate over the
   files' Parquet footers (DuckDB's ``parquet_metadata``). A file whose ``model_id``
   statistics are exact, with min = max and no NULL, holds that model's rows alone; any other
   file (several models, or no statistics) has its ``model_id`` column aggregated
   (``GROUP BY``). A table stored in the database is aggregated the same way. The files as
   the scores stage writes them need their footers read, nothing more.
2. **Properties across models** (:func:`cross_model_findings`): SQL over that summary and
   the ``models`` table: every model has rows in each per-neuron table, and every model with
   rows there is a model of ``models``.
3. **Each model's rows** (:func:`validate_models`): every row with its ``model_id``, from
   every file that holds any, read alone and validated by Great Expectations with the suite
   of :func:`~deepmouse.quality.expectations.per_neuron_expectations`, one table at a time.
   As each batch holds all of a model's rows and the tables' keys begin with ``model_id``, a
   key unique within every batch is unique in the table. ``checks.max_nan_fraction`` bounds
   each model's rows (and so the table's). From :data:`PARALLEL_MIN_ROWS` rows to validate
   (the reference study's scale), the models are shared out among worker processes, one per
   usable core, each holding one model's rows; the findings, verdicts and log are the same.

A model that passes has its verdict kept in the verdicts folder, ``<model_id>.json`` (a
:class:`~deepmouse.keyed.KeyedFile`), under a key (:func:`verdict_key`): each of its files as
an input (path relative to the project root, sha256), the tables' columns, the checks params,
and a digest of this package's code with the versions of the libraries that read and validate
the rows. A model whose key matches its kept verdict is not validated again; otherwise the log
says which part changed. A verdict file sealed by its own sha256, so a damaged or edited one
is seen and the model validated again. Only passing verdicts are kept, each as soon as its
model passes (written aside, then renamed), so a failure elsewhere or an interrupt loses none;
a model that fails loses its verdict, and is validated again on every run until it passes. A
table stored in the database has no files to key on: its models are validated on every run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterator, Sequence
from urllib.parse import quote

import duckdb
import pandas as pd

from deepmouse.atomic import is_staging, remove_stale_staging_in
from deepmouse.config import ChecksConfig
from deepmouse.errors import StoreError
from deepmouse.hashing import file_sha256
from deepmouse.keyed import KeyedFile, input_record, make_key
from deepmouse.quality import expectations as ex
from deepmouse.store.build import PARQUET_TABLES, parquet_files, project_root

PER_NEURON_TABLES = PARQUET_TABLES
"""The tables validated model by model."""

FORMAT_VERSION = 2
"""Raised whenever a verdict's layout or meaning changes, so no older verdict is reused.
2: verdicts kept by :mod:`deepmouse.keyed` (sealed file; files as inputs by path and sha256)."""

VALIDATING_PACKAGES = ("great_expectations", "pandas", "pyarrow", "duckdb")
"""Libraries whose versions can change what a validation finds: part of every verdict's key."""

LOCATED = "located_model_rows"
"""Name under which the summary of :func:`locate_model_rows` is visible to the SQL across models."""

PARALLEL_MIN_ROWS = 20_000_000
"""Rows to validate from which the models are shared out among worker processes, one per
usable core. A worker starts in about 3 s (it imports Great Expectations), and the
validation takes about 0.5 s per million rows on the project's 2-core machine, so a second
worker pays off from some 15 million rows: the reference study's scale has 143 million, the
default run 0.4 million."""


# ------------------------------------------------------------------ 1. where the rows are
def locate_model_rows(con: duckdb.DuckDBPyConnection, db_path: str | Path) -> pd.DataFrame:
    """Which model's rows each per-neuron table holds, and in which files; no row is loaded.

    Returns
    -------
    DataFrame with columns ``table_name``, ``path`` (the file as the store lists it, relative
    to the project root; None for a table stored in the database), ``model_id`` (None for rows
    without one) and ``n_rows``: one row per table, file and model found in it.

    Raises
    ------
    StoreError
        Naming the files, if a file's ``model_id`` column cannot be read.
    """
    root = project_root(db_path)
    parts = []
    for table in PER_NEURON_TABLES:
        files = parquet_files(con, db_path, table)
        if not files:
            parts.append(con.execute(f"SELECT ? AS table_name, NULL::VARCHAR AS path, model_id, count(*) AS n_rows "
                                     f"FROM {table} GROUP BY model_id", [table]).fetchdf())
            continue
        listed = {str(path): _listed_name(path, root) for path in files}
        try:
            footers = con.execute(
                """
                SELECT file_name AS file, first(stats_min_value) AS model_id, sum(row_group_num_rows) AS n_rows,
                       bool_and(coalesce(stats_null_count = 0 AND min_is_exact AND max_is_exact
                                         AND stats_min_value = stats_max_value, false))
                       AND count(DISTINCT stats_min_value) = 1 AS one_model
                FROM parquet_metadata(?) WHERE path_in_schema = 'model_id' GROUP BY file_name
                """, [list(listed)]).fetchdf()
        except duckdb.Error as err:
            raise StoreError(f"table {table}: cannot read the Parquet footers of its files ({_one_line(err)})") from None
        found = footers.loc[footers["one_model"], ["file", "model_id", "n_rows"]]
        unsettled = sorted(set(listed) - set(found["file"]))
        if unsettled:
            try:
                scanned = con.execute("SELECT filename AS file, model_id, count(*) AS n_rows "
                                      "FROM read_parquet(?, filename = true) GROUP BY ALL", [unsettled]).fetchdf()
            except duckdb.Error as err:
                raise StoreError(f"table {table}: cannot read model_id from {', '.join(unsettled)} "
                                 f"({_one_line(err)})") from None
            found = pd.concat([found, scanned], ignore_index=True)
        parts.append(pd.DataFrame({"table_name": table, "path": found["file"].map(listed),
                                   "model_id": found["model_id"], "n_rows": found["n_rows"]}))
    located = pd.concat(parts, ignore_index=True)
    located["n_rows"] = located["n_rows"].astype("int64")
    return located.sort_values(["table_name", "model_id", "path"], na_position="first").reset_index(drop=True)


# --------------------------------------------------------------- 2. properties across models
CROSS_MODEL_SQL = f"""
WITH per_neuron AS (SELECT unnest($tables::VARCHAR[]) AS table_name),
     present AS (SELECT DISTINCT table_name, model_id FROM {LOCATED})
SELECT t.table_name, m.model_id, 'a model of the models table without rows here' AS problem
FROM models AS m CROSS JOIN per_neuron AS t
WHERE NOT EXISTS (SELECT 1 FROM present AS p WHERE p.table_name = t.table_name AND p.model_id = m.model_id)
UNION ALL
SELECT p.table_name, p.model_id, 'rows of a model not in the models table' AS problem
FROM present AS p
WHERE NOT EXISTS (SELECT 1 FROM models AS m WHERE m.model_id = p.model_id)
ORDER BY table_name, problem, model_id NULLS FIRST
"""
"""Each row: a table, a model and what is wrong; from the summary of :func:`locate_model_rows`."""


def cross_model_findings(con: duckdb.DuckDBPyConnection, located: pd.DataFrame) -> list[ex.Finding]:
    """The properties of the per-neuron tables that span models, as SQL over ``located``.

    One :class:`~deepmouse.quality.expectations.Finding` per table and problem, naming the models.
    """
    con.register(LOCATED, located)
    try:
        rows = con.execute(CROSS_MODEL_SQL, {"tables": list(PER_NEURON_TABLES)}).fetchdf()
    finally:
        con.unregister(LOCATED)
    return [ex.Finding(table, "models across tables", problem, len(group),
                       [{"model_id": model} for model in group["model_id"].head(5)])
            for (table, problem), group in rows.groupby(["table_name", "problem"], sort=True)]


# --------------------------------------------------------------------- 3. model by model
@dataclasses.dataclass(frozen=True)
class ModelRows:
    """Where one model's rows of one per-neuron table are.

    ``files``: absolute paths of every file holding some of them; empty when the table is
    stored in the database. ``listed``: the same files as the store lists them.
    """

    table: str
    model_id: str
    files: tuple[Path, ...]
    listed: tuple[str, ...]
    n_rows: int


def read_model_rows(con: duckdb.DuckDBPyConnection, rows: ModelRows,
                    columns: Sequence[tuple[str, str]] | None = None) -> pd.DataFrame:
    """One model's rows of one table, with the values and column types of the store's table or
    view; from files, ``model_id`` comes as a one-value ENUM (a pandas categorical).

    The rows are those whose ``model_id`` equals it, so the ENUM is exact; it spares building a
    Python string per row, which the validation would only turn into a categorical
    (:class:`~deepmouse.quality.expectations.Validator`). ``columns``: ``(name, type)`` of the
    table (:func:`table_columns`), read from the store if not given (a worker's connection holds
    no store).
    """
    if not rows.files:
        return con.execute(f"SELECT * FROM {rows.table} WHERE model_id = ?", [rows.model_id]).fetchdf()
    model = "'" + rows.model_id.replace("'", "''") + "'"
    select = ", ".join(f"CAST({name} AS {f'ENUM({model})' if name == 'model_id' else kind}) AS {name}"
                       for name, kind in (columns or table_columns(con, rows.table)))
    try:
        return con.execute(f"SELECT {select} FROM read_parquet(?) WHERE model_id = ?",
                           [[str(path) for path in rows.files], rows.model_id]).fetchdf()
    except duckdb.Error as err:
        raise StoreError(f"table {rows.table}: cannot read model {rows.model_id} from "
                         f"{', '.join(rows.listed)} ({_one_line(err)})") from None


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    """``(name, type)`` of each column of a table or view of the store."""
    return [(name, kind) for name, kind, *_ in con.execute(f"DESCRIBE {table}").fetchall()]


def validate_models(con: duckdb.DuckDBPyConnection, db_path: str | Path, located: pd.DataFrame, cfg: ChecksConfig,
                    validator: ex.Validator, verdicts: Verdicts | None = None,
                    progress: Callable[[str], None] = print, *,
                    not_measured: Sequence[str] = (), workers: int | None = None) -> list[ex.Finding]:
    """Validate each model's rows of the per-neuron tables, reusing the verdicts that still hold.

    Logs one line per model, ``checks <i>/<n> <model_id>: <verdict> (<why>)``, the verdict
    ``validated``, ``reused`` or ``failed``; then how many were validated.

    Parameters
    ----------
    located : the summary of :func:`locate_model_rows` for this store.
    verdicts : where passing verdicts are kept across runs; None keeps none and validates all.
    not_measured : columns the run could not compute (no trials), left out of ``max_nan_fraction``.
    workers : processes that validate models side by side when there are many rows
        (:data:`PARALLEL_MIN_ROWS`); None: one per usable core. The findings, verdicts and
        log lines do not depend on it; the models whose verdicts still hold are listed first.

    Returns
    -------
    The failed expectations, each naming its table, model and files.
    """
    root = project_root(db_path)
    models = sorted(located["model_id"].dropna().unique())
    if verdicts is not None:
        verdicts.keep_only(models, progress)
    columns = {table: table_columns(con, table) for table in PER_NEURON_TABLES}
    common = {"params": dataclasses.asdict(cfg), "not_measured": sorted(not_measured),
              "columns": {table: [list(column) for column in columns[table]] for table in PER_NEURON_TABLES}}
    digests: dict[Path, str] = {}
    pending = []
    for position, model_id in enumerate(models, start=1):
        parts = _model_rows(located[located["model_id"] == model_id], root)
        label = f"checks {position}/{len(models)} {model_id}"
        key, reason = None, "no verdicts kept"
        if verdicts is not None and not all(part.files for part in parts):
            reason = "its rows are stored in the database"
        elif verdicts is not None:
            key = verdict_key(common, parts, digests)
            reason = verdicts.reason_to_validate(model_id, key)
        if reason is None:
            progress(f"{label}: reused ({verdicts.path(model_id)} holds a passing verdict on the same files, "
                     "expectations and params)")
            continue
        pending.append((label, model_id, parts, key, reason))
    findings = []
    outcomes = _validations(con, [parts for _, _, parts, _, _ in pending], columns, cfg, validator, not_measured,
                            progress, workers)
    for (label, model_id, parts, key, reason), (model_findings, seconds) in zip(pending, outcomes):
        n_rows = {part.table: part.n_rows for part in parts}
        if model_findings:
            if verdicts is not None:
                verdicts.discard(model_id)
            progress(f"{label}: failed {len(model_findings)} expectation(s) ({reason})")
        else:
            if key is not None:
                verdicts.keep(model_id, key, n_rows)
            progress(f"{label}: validated ({reason}), {sum(n_rows.values())} rows in {seconds:.1f} s")
        findings += model_findings
    progress(f"per-neuron tables: {len(pending)} of {len(models)} models validated, "
             f"{len(models) - len(pending)} reused")
    return findings


def _validations(con: duckdb.DuckDBPyConnection, models: list[list[ModelRows]],
                 columns: dict[str, list[tuple[str, str]]], cfg: ChecksConfig, validator: ex.Validator,
                 not_measured: Sequence[str], progress: Callable[[str], None],
                 workers: int | None) -> Iterator[tuple[list[ex.Finding], float]]:
    """Each model's findings and seconds, in order: in this process, or shared out among worker
    processes when there are :data:`PARALLEL_MIN_ROWS` rows or more, all in files.

    Workers run ahead of the caller by at most their number of models: after an error (raised
    here, in the models' order) or an interrupt, no further model is started.
    """
    workers = _usable_cores() if workers is None else workers
    workers = min(workers, len(models))
    n_rows = sum(part.n_rows for parts in models for part in parts)
    if workers < 2 or n_rows < PARALLEL_MIN_ROWS or not all(part.files for parts in models for part in parts):
        for parts in models:
            started = time.perf_counter()
            yield _validate_model(con, parts, cfg, validator, not_measured), time.perf_counter() - started
        return
    progress(f"per-neuron tables: {n_rows} rows of {len(models)} models to validate, in {workers} worker processes")
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        running = []
        for parts in models:
            running.append(pool.submit(_validate_in_worker, parts, columns, cfg, tuple(not_measured)))
            if len(running) > workers:
                yield running.pop(0).result()
        for future in running:
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


_worker_validator: ex.Validator | None = None
"""A worker process's Great Expectations context, made for its first model."""


def _validate_in_worker(parts: list[ModelRows], columns: dict[str, list[tuple[str, str]]], cfg: ChecksConfig,
                        not_measured: tuple[str, ...]) -> tuple[list[ex.Finding], float]:
    """One model's validation in a worker process, with a connection of its own, on one thread."""
    global _worker_validator
    if _worker_validator is None:
        _worker_validator = ex.Validator()
    started = time.perf_counter()
    con = duckdb.connect(config={"threads": 1})
    try:
        return _validate_model(con, parts, cfg, _worker_validator, not_measured, columns), time.perf_counter() - started
    finally:
        con.close()


def _model_rows(located: pd.DataFrame, root: Path) -> list[ModelRows]:
    """One model's :class:`ModelRows` per table it has rows in, from its part of the summary."""
    parts = []
    for table in PER_NEURON_TABLES:
        here = located[located["table_name"] == table]
        if here.empty:
            continue  # named by cross_model_findings
        in_database = here["path"].isna().any()
        listed = () if in_database else tuple(sorted(here["path"]))
        parts.append(ModelRows(table, str(here["model_id"].iloc[0]), tuple(root / name for name in listed), listed,
                               int(here["n_rows"].sum())))
    return parts


def _validate_model(con: duckdb.DuckDBPyConnection, parts: Sequence[ModelRows], cfg: ChecksConfig,
                    validator: ex.Validator, not_measured: Sequence[str] = (),
                    columns: dict[str, list[tuple[str, str]]] | None = None) -> list[ex.Finding]:
    findings = []
    for part in parts:
        frame = read_model_rows(con, part, None if columns is None else columns[part.table])
        suite = ex.per_neuron_expectations(part.table, frame, cfg.max_nan_fraction, not_measured)
        failed = validator.validate(part.table, frame, suite)
        del frame  # before the next table's rows are read
        files = ", ".join(part.listed) or None
        findings += [dataclasses.replace(finding, model=part.model_id, files=files) for finding in failed]
    return findings


# ------------------------------------------------------------------------------ verdicts
def verdict_key(common: dict, parts: Sequence[ModelRows], digests: dict[Path, str]) -> dict:
    """What a model's verdict depends on: :data:`FORMAT_VERSION`, :func:`validation_code_digest`,
    ``common`` (params, columns) and its files, inputs ``<table>[<i>]`` by path and sha256.

    ``digests`` caches the sha256 of each file within one run (a file may hold several models).
    """
    inputs = {}
    for part in parts:
        for i, path in enumerate(part.files):
            if path not in digests:
                digests[path] = file_sha256(path)
            inputs[f"{part.table}[{i}]"] = input_record(path, sha256=digests[path])
    return make_key(format_version=FORMAT_VERSION, code=validation_code_digest(), inputs=inputs, **common)


VALIDATION_CODE = "deepmouse.quality.per_model:validate_models"
"""The validation of the models' files: the verdict key's code digest is over its import closure."""


def validation_code_digest() -> str:
    """sha256 over the import closure of :data:`VALIDATION_CODE` (each file by its path from the
    project root) and the versions of :data:`VALIDATING_PACKAGES`: a change to either validates
    every model again."""
    from deepmouse.codedeps import code_digest

    digest = hashlib.sha256(code_digest(VALIDATION_CODE).encode() + b"\0")
    for name in VALIDATING_PACKAGES:
        digest.update(f"{name}=={metadata.version(name)}\0".encode())
    return digest.hexdigest()


class Verdicts:
    """Passing verdicts of models, one :class:`~deepmouse.keyed.KeyedFile` per model in ``folder``.

    Each file holds the key and the value ``{"rows": {table: n}, "passed": true}``, sealed by
    their sha256: nothing but what the validated files, code and params determine, so the
    folder is the same bytes wherever and whenever it is made (it is a DVC output).
    """

    LABELS = {"code": "the validation code or libraries changed", "format": "the verdicts' format changed"}
    """What a reason says for these parts of the key; the others are named as they changed."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, model_id: str) -> Path:
        return self.folder / (quote(model_id, safe="") + ".json")

    def reason_to_validate(self, model_id: str, key: dict) -> str | None:
        """Why ``model_id`` must be validated under ``key`` (which part of the key changed, or
        why the kept verdict is unusable), or None if its kept verdict holds."""
        kept = KeyedFile(self.path(model_id))
        if not kept.path.is_file():
            return "no verdict yet"
        reason = kept.reason_to_recompute(key, labels=self.LABELS)
        if reason is not None:
            return reason
        value = kept.record()["value"]
        if not isinstance(value, dict) or value.get("passed") is not True:
            return f"{kept.path} holds no passing verdict"
        return None

    def keep(self, model_id: str, key: dict, rows: dict[str, int]) -> None:
        """Write a passing verdict: beside its place, flushed, then renamed onto it."""
        KeyedFile(self.path(model_id)).write(key, {"rows": rows, "passed": True})

    def discard(self, model_id: str) -> None:
        self.path(model_id).unlink(missing_ok=True)

    def keep_only(self, model_ids: Sequence[str], progress: Callable[[str], None]) -> None:
        """Remove the verdicts of models no longer in the store, and those a killed run left half-written."""
        if not self.folder.is_dir():
            return
        wanted = {self.path(model_id).name for model_id in model_ids}
        remove_stale_staging_in(self.folder)
        for path in sorted(self.folder.iterdir()):
            if path.name in wanted or not path.is_file() or is_staging(path):  # staging left now: a live writer's
                continue
            if path.suffix == ".json":
                path.unlink()
                progress(f"removed {path}: its model is no longer in the store")


def _listed_name(path: Path, root: Path) -> str:
    """``path`` as the store lists it: relative to the project root if inside it."""
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix()


def _one_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
