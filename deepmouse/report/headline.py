"""The headline for ``dvc metrics show``: one small flat file per area.

``dvc metrics show`` prints one row per metrics file and one column per key, so one file per
area with the same few keys reads as a narrow table, areas down the side::

    Path                       neurons  regression_best  regression_normalised  rsa_best  rsa_normalised  selection  source
    reports/metrics/VISp.json  31       alexnet_random   0.5979                 ...

Keys: ``neurons`` (selected neurons in the area), ``<method>_best`` (the model ranked first
by that method in the area) and ``<method>_normalised`` (its normalised score, r / √ceiling),
``selection`` (the layer selection the ranking uses: ``cv`` when stored) and ``source`` (the
neural data: ``simulated``, ``nwb_dir`` or ``allen``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from deepmouse.report.tables import ReportTables


def headline_metrics(tables: ReportTables) -> dict[str, dict]:
    """Per area, the flat headline row (keys in the module docstring)."""
    ranking = tables.ranking[tables.ranking["layer_selection"] == tables.selection]
    selected = tables.neurons.set_index("area")["selected"]
    headline = {}
    for area in tables.areas:
        row: dict = {"neurons": int(selected.get(area, 0))}
        for method, rows in ranking[ranking["site"] == area].groupby("method"):
            best = rows.sort_values(["score", "model_id"], ascending=[False, True]).iloc[0]
            row[f"{method}_best"] = best["model_id"]
            row[f"{method}_normalised"] = None if pd.isna(best["normalized_score"]) else round(
                float(best["normalized_score"]), 4)
        row["selection"] = tables.selection
        row["source"] = tables.source
        headline[area] = row
    return headline


def write_headline(tables: ReportTables, out_dir: str | Path) -> dict[str, dict]:
    """Write ``<area>.json`` per area into ``out_dir``, replacing any other ``*.json`` there.

    Returns the rows written, by area.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    headline = headline_metrics(tables)
    for stale in out_dir.glob("*.json"):
        if stale.stem not in headline:
            stale.unlink()
    for area, row in headline.items():
        (out_dir / f"{area}.json").write_text(json.dumps(row, indent=2) + "\n")
    return headline
