"""The per-neuron tables checked model by model: violations named with their model, verdicts
reused only while a model's files, the expectations and the params are unchanged, and never
more than one model's rows in memory."""

import gc
import json
import re
import weakref

import numpy as np
import pandas as pd
import pytest

from deepmouse.config import ChecksConfig
from deepmouse.errors import QualityGateError, StoreError
from deepmouse.keyed import key_digest
from deepmouse.quality import expectations as ex
from deepmouse.quality import gate, per_model
from deepmouse.quality.gate import run_checks
from deepmouse.store.build import PARQUET_TABLES, ParquetFiles, build_store, open_store
from tests.conftest import REPO
from tests.quality.test_gate import _means

CFG = ChecksConfig(min_selected_per_area=1)
REGRESSION_KEY = ["model_id", "layer_index", "neuron_id"]


@pytest.fixture
def tables(score_tables) -> dict[str, pd.DataFrame]:
    """``score_tables`` with 64 neurons, so one model's per-neuron rows outnumber every small table's."""
    rng = np.random.default_rng(5)
    neurons = pd.concat([score_tables["neurons"].assign(neuron_id=score_tables["neurons"]["neuron_id"] + 100 * copy)
                         for copy in range(8)], ignore_index=True)
    selected = neurons.loc[neurons["selected"], "neuron_id"].to_numpy()
    models = score_tables["models"]["model_id"]
    regression = pd.concat([
        pd.DataFrame({"model_id": m, "layer_index": layer, "neuron_id": selected, "alpha": 1.0,
                      "score": rng.uniform(0, 0.6, len(selected))})
        for m in models for layer in range(3)
    ], ignore_index=True)
    neuron_scores = pd.concat([
        pd.DataFrame({"model_id": m, "method": "regression", "layer_selection": rule, "neuron_id": selected,
                      "score": 0.3, "normalized_score": 0.3 / np.sqrt(0.8), "low_ceiling": False})
        for m in models for rule in ("max", "cv")
    ], ignore_index=True)
    return {**score_tables, "neurons": neurons, "regression_scores": regression, "neuron_scores": neuron_scores}


def _with_model(tables: dict, model_id: str, like: str = "alexnet") -> dict:
    """``tables`` and one more model, a copy of ``like``'s rows under ``model_id``."""
    return {name: pd.concat([frame, frame[frame["model_id"] == like].assign(model_id=model_id)], ignore_index=True)
            if "model_id" in frame.columns else frame for name, frame in tables.items()}


def _model_file(root, model_id: str, table: str = "regression_scores"):
    return root / "data" / "scores" / "models" / model_id / f"{table}.parquet"


def _build(root, tables: dict, **parquet_options) -> None:
    """A project at ``root`` whose store keeps the per-neuron tables in one Parquet file per model."""
    (root / "dvc.yaml").write_text("stages: {}\n")
    tables = dict(tables)
    for name in PARQUET_TABLES:
        paths = []
        for model_id, rows in tables[name].groupby("model_id", sort=True):
            path = _model_file(root, model_id, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            rows.to_parquet(path, index=False, **parquet_options)
            paths.append(path)
        tables[name] = ParquetFiles(paths)
    build_store(root / "data" / "store.duckdb", tables, REPO / "sql")
    _means(tables["neurons"]).to_parquet(root / "data" / "means.parquet")


def _check(root, cfg: ChecksConfig = CFG) -> tuple[dict, dict[str, str]]:
    """Run the checks with the project's verdicts folder: the report and each model's verdict."""
    lines = []
    try:
        report = run_checks(root / "data" / "store.duckdb", root / "data" / "means.parquet", REPO / "sql" / "checks",
                            cfg, root / "checks.json", root / "data" / "checks", progress=lines.append)
    except QualityGateError as err:
        err.lines = lines
        raise
    return report, _verdicts(lines)


def _verdicts(lines: list[str]) -> dict[str, str]:
    """model -> validated, reused or failed, from the gate's line per model."""
    found = (re.match(r"checks \d+/\d+ (\S+): (\w+)", line) for line in lines)
    return {match[1]: match[2] for match in found if match}


def _rewrite(root, model_id: str, change) -> None:
    path = _model_file(root, model_id)
    change(pd.read_parquet(path)).to_parquet(path, index=False)


def test_every_model_is_validated_once_then_reused(tmp_path, tables):
    _build(tmp_path, tables)
    report, verdicts = _check(tmp_path)
    assert report["passed"] and verdicts == {"alexnet": "validated", "alexnet_random": "validated"}
    assert report["tables"]["regression_scores"] == len(tables["regression_scores"])
    assert report["tables"]["neuron_scores"] == len(tables["neuron_scores"])
    kept = json.loads((tmp_path / "data" / "checks" / "alexnet.json").read_text())
    assert kept["value"] == {"passed": True, "rows": {"regression_scores": 120, "neuron_scores": 80}}
    assert kept["key"]["inputs"]["regression_scores[0]"]["path"] == "data/scores/models/alexnet/regression_scores.parquet"
    assert _check(tmp_path)[1] == {"alexnet": "reused", "alexnet_random": "reused"}


def test_adding_a_model_validates_only_that_model(tmp_path, tables):
    _build(tmp_path, tables)
    _check(tmp_path)
    before = (tmp_path / "data" / "checks" / "alexnet.json").read_bytes()
    _build(tmp_path, _with_model(tables, "alexnet_copy"))
    report, verdicts = _check(tmp_path)
    assert report["passed"]
    assert verdicts == {"alexnet": "reused", "alexnet_copy": "validated", "alexnet_random": "reused"}
    assert (tmp_path / "data" / "checks" / "alexnet.json").read_bytes() == before


def test_a_removed_model_loses_its_verdict(tmp_path, tables):
    _build(tmp_path, _with_model(tables, "alexnet_copy"))
    _check(tmp_path)
    _build(tmp_path, tables)
    lines = []
    run_checks(tmp_path / "data" / "store.duckdb", tmp_path / "data" / "means.parquet", REPO / "sql" / "checks", CFG,
               tmp_path / "checks.json", tmp_path / "data" / "checks", progress=lines.append)
    assert sorted(p.name for p in (tmp_path / "data" / "checks").iterdir()) == ["alexnet.json", "alexnet_random.json"]
    assert any("alexnet_copy.json: its model is no longer in the store" in line for line in lines), lines


def _nan_score(frame):
    frame.loc[3, "score"] = np.nan
    return frame


def _score_out_of_range(frame):
    frame.loc[3, "score"] = 1.5
    return frame


def _duplicated_key(frame):
    return pd.concat([frame, frame.loc[[3]].assign(score=0.1)], ignore_index=True)


@pytest.mark.parametrize("change, check", [
    (_nan_score, "expect_column_values_to_not_be_null (column=score)"),
    (_score_out_of_range, "expect_column_values_to_be_between (column=score, min_value=-1.0, max_value=1.0)"),
    (_duplicated_key, "expect_compound_columns_to_be_unique (column_list=['model_id', 'layer_index', 'neuron_id'])"),
])
def test_a_violation_in_one_models_file_is_named_with_that_model(tmp_path, tables, change, check):
    _build(tmp_path, tables)
    _check(tmp_path)
    _rewrite(tmp_path, "alexnet_random", change)
    row = pd.read_parquet(_model_file(tmp_path, "alexnet_random")).loc[3, REGRESSION_KEY]
    with pytest.raises(QualityGateError) as err:
        _check(tmp_path)
    assert _verdicts(err.value.lines) == {"alexnet": "reused", "alexnet_random": "failed"}
    line = next(line for line in str(err.value).splitlines() if "regression_scores:" in line)
    key = ", ".join(f"{column!r}: {value!r}" for column, value in zip(REGRESSION_KEY, row.tolist()))
    assert line.startswith(f"  - regression_scores: {check} in model alexnet_random "
                           f"(data/scores/models/alexnet_random/regression_scores.parquet): ")
    assert "{" + key + "}" in line, line
    finding = next(f for f in json.loads((tmp_path / "checks.json").read_text())["findings"]
                   if f["table"] == "regression_scores")
    assert finding["model"] == "alexnet_random" and finding["n_violations"] >= 1
    # The model that passed keeps its verdict; the one that failed has none.
    assert sorted(p.name for p in (tmp_path / "data" / "checks").iterdir()) == ["alexnet.json"]


def test_a_failed_model_is_validated_again_until_it_passes(tmp_path, tables):
    _build(tmp_path, tables)
    original = _model_file(tmp_path, "alexnet").read_bytes()
    _rewrite(tmp_path, "alexnet", _score_out_of_range)
    for _ in range(2):
        with pytest.raises(QualityGateError, match="in model alexnet ") as err:
            _check(tmp_path)
        assert _verdicts(err.value.lines)["alexnet"] == "failed"
    _model_file(tmp_path, "alexnet").write_bytes(original)
    report, verdicts = _check(tmp_path)
    assert report["passed"] and verdicts == {"alexnet": "validated", "alexnet_random": "reused"}


def test_changed_expectations_or_params_validate_every_model_again(tmp_path, tables, monkeypatch):
    _build(tmp_path, tables)
    _check(tmp_path)
    assert set(_check(tmp_path, ChecksConfig(min_selected_per_area=1, max_nan_fraction=0.1))[1].values()) == {"validated"}
    monkeypatch.setattr(per_model, "validation_code_digest", lambda: "another suite")
    lines = []
    run_checks(tmp_path / "data" / "store.duckdb", tmp_path / "data" / "means.parquet", REPO / "sql" / "checks", CFG,
               tmp_path / "checks.json", tmp_path / "data" / "checks", progress=lines.append)
    assert set(_verdicts(lines).values()) == {"validated"}
    assert any("the validation code or libraries changed" in line for line in lines), lines


def test_a_verdict_is_kept_only_for_the_files_it_was_given(tmp_path, tables):
    """A verdict edited to claim a pass on other files is not taken for this model's."""
    _build(tmp_path, tables)
    _check(tmp_path)
    path = tmp_path / "data" / "checks" / "alexnet.json"
    kept = json.loads(path.read_text())
    kept["key"]["inputs"]["regression_scores[0]"]["sha256"] = "0" * 64
    path.write_text(json.dumps(kept))
    assert _check(tmp_path)[1] == {"alexnet": "validated", "alexnet_random": "reused"}


def test_never_more_than_one_models_rows_at_once(tmp_path, tables, monkeypatch):
    tables = _with_model(tables, "alexnet_copy")
    _build(tmp_path, tables)
    fetched, validated = [], []

    class Recording:
        """A store connection that records the rows of every result fetched from it."""

        def __init__(self, con):
            self._con = con

        def execute(self, *args, **kwargs):
            self._con.execute(*args, **kwargs)
            return self

        def fetchdf(self):
            frame = self._con.fetchdf()
            fetched.append(len(frame))
            return frame

        def fetchall(self):
            rows = self._con.fetchall()
            fetched.append(len(rows))
            return rows

        def __getattr__(self, name):
            return getattr(self._con, name)

    validate = ex.Validator.validate
    earlier = []

    def recording_validate(self, table, frame, expectations):
        if table in PARQUET_TABLES:
            gc.collect()
            assert all(ref() is None for ref in earlier), "an earlier model's rows are still held"
            earlier.append(weakref.ref(frame))
        validated.append((table, len(frame), frame["model_id"].nunique() if "model_id" in frame else 0))
        return validate(self, table, frame, expectations)

    monkeypatch.setattr(gate, "open_store", lambda path: Recording(open_store(path)))
    monkeypatch.setattr(ex.Validator, "validate", recording_validate)
    assert _check(tmp_path)[0]["passed"]
    one_model = tables["regression_scores"].groupby("model_id").size().max()
    assert max(fetched) <= one_model < len(tables["regression_scores"])
    per_neuron = [(table, n, n_models) for table, n, n_models in validated if table in PARQUET_TABLES]
    assert len(per_neuron) == 2 * 3 and all(n_models == 1 for *_, n_models in per_neuron)
    assert max(n for _, n, _ in per_neuron) == one_model


def test_a_file_of_several_models_or_without_statistics_is_validated_per_model(tmp_path, tables):
    _build(tmp_path, tables)
    con = open_store(tmp_path / "data" / "store.duckdb")
    by_footers = per_model.locate_model_rows(con, tmp_path / "data" / "store.duckdb")
    con.close()
    assert by_footers[["table_name", "model_id", "n_rows"]].values.tolist() == [
        ["neuron_scores", "alexnet", 80], ["neuron_scores", "alexnet_random", 80],
        ["regression_scores", "alexnet", 120], ["regression_scores", "alexnet_random", 120]]

    # Both models' rows in one file without statistics: its model_id column is aggregated instead.
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    shared = tmp_path / "shared.parquet"
    tables["regression_scores"].to_parquet(shared, index=False, write_statistics=False)
    neuron_files = []
    for model_id, rows in tables["neuron_scores"].groupby("model_id"):
        neuron_files.append(_model_file(tmp_path, model_id, "neuron_scores"))
        rows.to_parquet(neuron_files[-1], index=False)
    db = tmp_path / "data" / "store.duckdb"
    build_store(db, {**tables, "regression_scores": ParquetFiles([shared]), "neuron_scores": ParquetFiles(neuron_files)},
                REPO / "sql")
    con = open_store(db)
    scanned = per_model.locate_model_rows(con, db)
    con.close()
    assert scanned[["table_name", "model_id", "n_rows"]].values.tolist() == by_footers[
        ["table_name", "model_id", "n_rows"]].values.tolist()
    assert set(scanned.loc[scanned["table_name"] == "regression_scores", "path"]) == {"shared.parquet"}

    frame = tables["regression_scores"].copy()
    frame.loc[frame.index[-1], "score"] = -2.0  # alexnet_random's last row
    frame.to_parquet(shared, index=False, write_statistics=False)
    with pytest.raises(QualityGateError) as err:
        _check(tmp_path)
    assert _verdicts(err.value.lines) == {"alexnet": "validated", "alexnet_random": "failed"}
    assert "expect_column_values_to_be_between (column=score, min_value=-1.0, max_value=1.0) in model " \
           "alexnet_random (shared.parquet): 1 violation(s)" in str(err.value)


@pytest.mark.parametrize("stored", ["files", "database"])
def test_a_models_rows_are_read_with_the_stores_values_model_id_as_a_category(tmp_path, tables, stored):
    # A quote in a model id, and a file holding two models: the one-value ENUM reads only its model's rows.
    odd = "it's_a_model"
    tables = _with_model(tables, odd)
    if stored == "files":
        _build(tmp_path, tables)
        shared = _model_file(tmp_path, "alexnet")
        pd.concat([tables["regression_scores"][tables["regression_scores"]["model_id"].isin(["alexnet", odd])]]).to_parquet(
            shared, index=False)
        files = [shared, _model_file(tmp_path, "alexnet_random")]
        build_store(tmp_path / "data" / "store.duckdb", {
            **tables, "regression_scores": ParquetFiles(files),
            "neuron_scores": ParquetFiles([_model_file(tmp_path, m, "neuron_scores") for m in ("alexnet", "alexnet_random",
                                                                                               odd)])}, REPO / "sql")
    else:
        (tmp_path / "dvc.yaml").write_text("stages: {}\n")
        build_store(tmp_path / "data" / "store.duckdb", tables, REPO / "sql")
    db = tmp_path / "data" / "store.duckdb"
    con = open_store(db)
    located = per_model.locate_model_rows(con, db)
    for table in PARQUET_TABLES:
        for model_id in ("alexnet", odd):
            part, = per_model._model_rows(located[(located["model_id"] == model_id)
                                                  & (located["table_name"] == table)], tmp_path)
            frame = per_model.read_model_rows(con, part)
            plain = con.execute(f"SELECT * FROM {table} WHERE model_id = ?", [model_id]).fetchdf()
            text = [name for name in plain.columns if plain[name].dtype == object]
            if stored == "files":
                assert frame["model_id"].cat.categories.tolist() == [model_id]
                assert all(frame[name].dtype == object for name in text if name != "model_id")
            else:
                assert all(frame[name].dtype == object for name in text)
            key = [c for c in REGRESSION_KEY if c in plain.columns] + (["layer_selection"] if table == "neuron_scores" else [])
            pd.testing.assert_frame_equal(frame.astype({name: object for name in text}).sort_values(key, ignore_index=True),
                                          plain.sort_values(key, ignore_index=True))
    con.close()


def _validate_all(root, workers: int, verdicts_dir) -> tuple[list, list[str]]:
    """validate_models on the project at ``root``: the findings and the log, timings left out."""
    db = root / "data" / "store.duckdb"
    con = open_store(db)
    lines = []
    try:
        findings = per_model.validate_models(con, db, per_model.locate_model_rows(con, db), CFG, ex.Validator(),
                                             per_model.Verdicts(verdicts_dir), lines.append, workers=workers)
    finally:
        con.close()
    return findings, [re.sub(r" in [0-9.]+ s$", "", line) for line in lines]


def test_models_validated_in_worker_processes_give_the_same_findings_verdicts_and_log(tmp_path, tables, monkeypatch):
    tables = _with_model(tables, "alexnet_copy")
    _build(tmp_path, tables)
    _rewrite(tmp_path, "alexnet_random", _duplicated_key)
    alone, alone_log = _validate_all(tmp_path, 1, tmp_path / "alone")
    assert not any("worker processes" in line for line in alone_log)
    # Below PARALLEL_MIN_ROWS the models are validated in this process whatever the workers.
    assert _validate_all(tmp_path, 2, tmp_path / "few_rows") == (alone, alone_log)
    monkeypatch.setattr(per_model, "PARALLEL_MIN_ROWS", 0)
    shared, shared_log = _validate_all(tmp_path, 2, tmp_path / "shared")
    n_rows = sum(len(tables[name]) for name in PARQUET_TABLES) + 1  # the duplicated row
    assert shared_log[0] == f"per-neuron tables: {n_rows} rows of 3 models to validate, in 2 worker processes"
    assert shared_log[1:] == alone_log and shared == alone
    assert [finding.model for finding in alone] == ["alexnet_random"]
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == ["alexnet.json", "alexnet_copy.json"]
    for name in ("alexnet.json", "alexnet_copy.json"):
        assert (tmp_path / "shared" / name).read_bytes() == (tmp_path / "alone" / name).read_bytes()
    # Verdicts kept by the workers' run are reused; the model that failed is validated again.
    assert _verdicts(_validate_all(tmp_path, 2, tmp_path / "shared")[1]) == {
        "alexnet": "reused", "alexnet_copy": "reused", "alexnet_random": "failed"}


def test_a_file_a_worker_cannot_read_is_named_and_stops_the_validation(tmp_path, tables, monkeypatch):
    _build(tmp_path, tables)
    _rewrite(tmp_path, "alexnet_random", lambda frame: frame.assign(score="high"))  # not a DOUBLE
    monkeypatch.setattr(per_model, "PARALLEL_MIN_ROWS", 0)
    with pytest.raises(StoreError, match=r"table regression_scores: cannot read model alexnet_random from "
                                         r"data/scores/models/alexnet_random/regression_scores.parquet \(Conversion"):
        _validate_all(tmp_path, 2, tmp_path / "verdicts")


def test_a_file_that_is_not_parquet_is_named_when_its_rows_are_located(tmp_path, tables):
    _build(tmp_path, tables)
    _model_file(tmp_path, "alexnet_random").write_bytes(b"not a parquet file")
    db = tmp_path / "data" / "store.duckdb"
    con = open_store(db)
    with pytest.raises(StoreError, match=r"table regression_scores: cannot read the Parquet footers of .*"
                                         r"data/scores/models/alexnet_random/regression_scores.parquet"):
        per_model.locate_model_rows(con, db)
    con.close()


def test_models_without_per_neuron_rows_and_rows_without_a_model_are_named(tmp_path, tables):
    _build(tmp_path, tables)
    ghost = _model_file(tmp_path, "ghost", "neuron_scores")
    ghost.parent.mkdir(parents=True)
    tables["neuron_scores"][tables["neuron_scores"]["model_id"] == "alexnet"].assign(model_id="ghost").to_parquet(
        ghost, index=False)
    build_store(tmp_path / "data" / "store.duckdb", {
        **tables,
        "regression_scores": ParquetFiles([_model_file(tmp_path, "alexnet")]),
        "neuron_scores": ParquetFiles([_model_file(tmp_path, m, "neuron_scores") for m in ("alexnet", "alexnet_random",
                                                                                           "ghost")]),
    }, REPO / "sql")
    with pytest.raises(QualityGateError) as err:
        _check(tmp_path)
    text = str(err.value)
    assert ("regression_scores: models across tables (a model of the models table without rows here): 1 violation(s), "
            "e.g. {'model_id': 'alexnet_random'}") in text
    assert ("neuron_scores: models across tables (rows of a model not in the models table): 1 violation(s), "
            "e.g. {'model_id': 'ghost'}") in text


def test_tables_stored_in_the_database_are_validated_per_model_every_time(tmp_path, tables):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    db = tmp_path / "data" / "store.duckdb"
    build_store(db, tables, REPO / "sql")
    _means(tables["neurons"]).to_parquet(tmp_path / "data" / "means.parquet")
    for _ in range(2):
        report, verdicts = _check(tmp_path)
        assert report["passed"] and verdicts == {"alexnet": "validated", "alexnet_random": "validated"}
    assert not (tmp_path / "data" / "checks").exists()


def test_per_neuron_suites_are_named_and_others_rejected():
    frame = pd.DataFrame({"model_id": ["a"], "score": [0.1], "normalized_score": [0.2]})
    assert [e.column for e in ex.per_neuron_expectations("neuron_scores", frame, 0.0)] == ["score", "normalized_score"]
    with pytest.raises(ValueError, match=r"'rsa_scores': no per-neuron suite; one of regression_scores, neuron_scores"):
        ex.per_neuron_expectations("rsa_scores", frame, 0.0)


def _flip_middle_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, said", [
    (_flip_middle_byte,
     r"(not valid JSON \(.*\)|its content does not match its record_sha256 \(corrupted or edited\))"),
    (lambda path: path.write_bytes(path.read_bytes()[:-20]), r"not valid JSON \(.*; truncated or corrupted\)"),
    (lambda path: path.unlink(), None),
])
def test_a_damaged_verdict_is_not_trusted_the_model_is_validated_again(tmp_path, tables, damage, said):
    _build(tmp_path, tables)
    _check(tmp_path)
    path = tmp_path / "data" / "checks" / "alexnet.json"
    clean = path.read_bytes()
    damage(path)
    lines = []
    run_checks(tmp_path / "data" / "store.duckdb", tmp_path / "data" / "means.parquet", REPO / "sql" / "checks", CFG,
               tmp_path / "checks.json", tmp_path / "data" / "checks", progress=lines.append)
    assert _verdicts(lines) == {"alexnet": "validated", "alexnet_random": "reused"}
    line = next(line for line in lines if line.startswith("checks 1/2 alexnet: "))
    why = "no verdict yet" if said is None else rf"{re.escape(str(path))}: {said}"
    assert re.match(rf"checks 1/2 alexnet: validated \({why}\), \d+ rows in", line), line
    assert path.read_bytes() == clean


def test_a_changed_file_or_param_is_named_in_the_log(tmp_path, tables):
    _build(tmp_path, tables)
    _check(tmp_path)
    _rewrite(tmp_path, "alexnet", lambda frame: frame.assign(score=frame["score"] * 0.5))
    lines = []
    run_checks(tmp_path / "data" / "store.duckdb", tmp_path / "data" / "means.parquet", REPO / "sql" / "checks",
               ChecksConfig(min_selected_per_area=1, max_nan_fraction=0.1), tmp_path / "checks.json",
               tmp_path / "data" / "checks", progress=lines.append)
    assert "checks 1/2 alexnet: validated (key changed: input regression_scores[0]: " \
           "data/scores/models/alexnet/regression_scores.parquet content changed; " \
           "params.max_nan_fraction 0.0 → 0.1)" in "\n".join(lines), lines


def test_same_named_files_in_different_folders_key_a_verdict_differently(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    parts = []
    for folder in ("one", "two"):
        path = tmp_path / folder / "regression_scores.parquet"
        path.parent.mkdir()
        path.write_bytes(b"the same bytes")
        parts.append(per_model.ModelRows("regression_scores", "alexnet", (path,), (f"{folder}/{path.name}",), 1))
    keys = [per_model.verdict_key({"params": {}}, [part], {}) for part in parts]
    assert [key["inputs"]["regression_scores[0]"]["path"] for key in keys] == [
        "one/regression_scores.parquet", "two/regression_scores.parquet"]
    assert keys[0]["inputs"]["regression_scores[0]"]["sha256"] == keys[1]["inputs"]["regression_scores[0]"]["sha256"]
    assert key_digest(keys[0]) != key_digest(keys[1])

