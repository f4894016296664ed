"""The runs table: what data, params, code and packages produced a store."""

import json

import duckdb

from deepmouse.store.build import build_store
from deepmouse.store.provenance import run_record
from tests.conftest import REPO

MANIFEST = {"source": "simulated", "experiments": [{"experiment_id": 2, "sha256": "b" * 64},
                                                   {"experiment_id": 1, "sha256": "a" * 64}]}


def test_run_record_digests_the_inputs_and_only_they_change_the_run_id(tmp_path):
    params = tmp_path / "params.json"
    params.write_text('{"a": 1}\n')
    first = run_record(MANIFEST, params, REPO / "sql", tmp_path / "no.lock")
    again = run_record({**MANIFEST, "experiments": MANIFEST["experiments"][::-1]}, params, REPO / "sql", tmp_path / "no.lock")
    assert first["run_id"] == again["run_id"] and first["experiments"] == "[1, 2]"
    assert first["source"] == "simulated" and first["dvc_lock_digest"] is None
    assert json.loads(first["package_versions"])["duckdb"] == duckdb.__version__
    params.write_text('{"a": 2}\n')
    assert run_record(MANIFEST, params, REPO / "sql", tmp_path / "no.lock")["run_id"] != first["run_id"]
    changed = {**MANIFEST, "experiments": [{"experiment_id": 1, "sha256": "c" * 64}, MANIFEST["experiments"][0]]}
    assert run_record(changed, params, REPO / "sql")["experiments_digest"] != first["experiments_digest"]


def test_the_store_says_where_its_scores_come_from(tmp_path, score_tables):
    db = tmp_path / "store.duckdb"
    build_store(db, score_tables, REPO / "sql")
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("select source, n_experiments from runs").fetchall() == [("simulated", 2)]
    assert {row[0] for row in con.execute("select distinct source from model_ranking").fetchall()} == {"simulated"}
    con.close()


def test_the_code_digest_names_files_by_path_not_name(tmp_path):
    """A module or SQL file moved to another folder changes the digest, though its name and bytes do not."""
    from deepmouse.codedeps import named_files_digest
    from deepmouse.store.provenance import code_digest

    sql_digests = []
    for sql_folder in ("views", "checks"):
        root = tmp_path / sql_folder
        (root / "sql" / sql_folder).mkdir(parents=True)
        (root / "sql" / sql_folder / "ranking.sql").write_text("SELECT 1;\n")
        sql_digests.append(code_digest(root / "sql"))
    assert sql_digests[0] != sql_digests[1]

    (tmp_path / "util.py").write_text("ANSWER = 42\n")
    module_digests = {named_files_digest({f"deepmouse/{folder}/util.py": tmp_path / "util.py"})
                      for folder in ("features", "metrics")}
    assert len(module_digests) == 2
