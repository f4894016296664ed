"""The report shows both ceilings of each area side by side, and the best model against each."""

import numpy as np
import pytest

from deepmouse.report.ceilings import ceilings_table
from deepmouse.report.html import render_page
from deepmouse.report.tables import load_report_tables
from tests.report.conftest import AREAS


def test_both_ceilings_and_the_best_model_against_each(zoo_store):
    tables = load_report_tables(zoo_store)
    shown = ceilings_table(tables.ceilings, tables.ranking, tables.selection).set_index(["area", "method"])
    assert set(shown.index) == {(area, method) for area in AREAS for method in ("rsa", "regression")}
    best = tables.ranking[(tables.ranking["layer_selection"] == tables.selection) & (tables.ranking["rank"] == 1)]
    for row in best.itertuples():
        consistency = tables.ceilings.set_index(["area", "method"]).loc[(row.site, row.method)]
        line = shown.loc[(row.site, row.method)]
        assert line["best model"] == row.display_name
        assert line["best / consistency"] == pytest.approx(row.score / consistency["interanimal_consistency"].iloc[0])
        assert line["split-half ceiling"] == pytest.approx(0.8)
        assert np.isfinite(line["inter-animal consistency"])
    page = render_page(tables, [], {})
    assert "Two ceilings: split-half and inter-animal" in page and "best / consistency" in page
