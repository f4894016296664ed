"""A copy of a finished run (tests/runs.py ``copy_run``) is a project of its own that DVC finds up to date.

Most e2e tests change a copy of a shared run instead of running `dvc repro` again; they are only
as good as these properties of the copy.
"""

import json
import subprocess

import numpy as np
import pytest

from deepmouse.store.build import open_query_connection
from tests.runs import dvc, ran

pytestmark = pytest.mark.slow


def test_a_copy_of_a_run_is_up_to_date_for_dvc(small_project):
    status = dvc(small_project, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout) == {"fingerprint": ["always changed"]}
    result = dvc(small_project, "repro")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert ran(result) == {"fingerprint"}, result.stdout
    assert "data/deepmouse.duckdb" not in subprocess.run(["git", "status", "--porcelain"], cwd=small_project,
                                                         capture_output=True, text=True, check=True).stdout


def test_a_copy_names_nothing_in_the_run_it_was_copied_from(small_run, small_project):
    # A path into the run (a store view, a link, a config entry) would let the copy read or change it.
    named = str(small_run).encode()
    naming = [str(path.relative_to(small_project)) for path in small_project.rglob("*")
              if path.is_file() and not path.is_symlink() and named in path.read_bytes()]
    links = [str(path.relative_to(small_project)) for path in small_project.rglob("*") if path.is_symlink()]
    assert naming == [] and links == []


def test_every_area_of_the_small_run_has_an_interanimal_consistency(small_run):
    con = open_query_connection(small_run / "data" / "deepmouse.duckdb")
    try:
        consistency = con.execute("SELECT * FROM interanimal_consistency").fetchdf()
        areas = {row[0] for row in con.execute("SELECT DISTINCT area FROM neurons WHERE selected").fetchall()}
        ranking = con.execute("SELECT * FROM model_ranking WHERE site_kind = 'area'").fetchdf()
    finally:
        con.close()
    modalities = set(ranking["modality"])
    assert set(consistency["area"]) == areas and set(consistency["modality"]) == modalities == {"calcium", "neuropixels"}
    assert len(consistency) == len(consistency[["area", "modality", "method"]].drop_duplicates())
    methods = {"rsa", "cka", "regression", "pls"}
    assert set(consistency["method"]) == methods and len(consistency) == len(methods) * len(modalities) * len(areas)
    assert (consistency["n_animals"] >= 2).all() and consistency["score"].notna().all()
    assert ((consistency["ci_low"] <= consistency["score"]) & (consistency["score"] <= consistency["ci_high"])).all()
    # Each model against the other animals: score / consistency where the consistency is clearly above 0.
    both = ranking.merge(consistency.rename(columns={"area": "site", "score": "consistency", "ci_low": "low"})
                         [["site", "modality", "method", "consistency", "low"]], on=["site", "modality", "method"],
                         validate="many_to_one")
    expected = (both["score"] / both["consistency"]).where(both["low"] > 0)
    assert np.allclose(both["normalized_interanimal"], expected, equal_nan=True)
    assert (both["above_interanimal"] == (both["score"] > both["consistency"])).all()
