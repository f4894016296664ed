"""The ranking figure, the layer-profile plot data and the DVC metrics file."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on the machines this runs on
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from deepmouse.config import AREAS
from deepmouse.store.build import open_store

METHOD_LABELS = {"rsa": "RSA (r of RDMs)", "regression": "Ridge regression (mean held-out r)"}
SELECTION_LABELS = {"cv": "layer chosen and scored on disjoint data (cv)", "max": "best layer per area (max, optimistic)"}


def write_report(db_path: str | Path, out_dir: str | Path) -> dict:
    """Write ``ranking.png``, ``layer_profile.csv`` and ``metrics.json`` into ``out_dir``.

    Returns the metrics written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    con = open_store(db_path, views=("model_ranking", "layer_profile"))
    try:
        rules = {row[0] for row in con.execute("SELECT DISTINCT layer_selection FROM model_scores").fetchall()}
        rule = "cv" if "cv" in rules else "max"
        ranking = con.execute("SELECT * FROM model_ranking WHERE site_kind = 'area' AND layer_selection = ?", [rule]).fetchdf()
        profile = con.execute("SELECT model_id, method, site, depth, score FROM layer_profile WHERE site_kind = 'area'").fetchdf()
        neurons = con.execute("SELECT area, count(*) FILTER (WHERE selected) AS n FROM neurons GROUP BY area").fetchdf()
        source, run_id = con.execute("SELECT source, run_id FROM runs").fetchone()
    finally:
        con.close()
    plot_ranking(ranking, out_dir / "ranking.png", rule, source)
    profile.sort_values(["method", "site", "model_id", "depth"]).to_csv(out_dir / "layer_profile.csv", index=False)
    metrics = {"data_source": source, "run_id": run_id, "layer_selection": rule, **summarise(ranking, neurons)}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def summarise(ranking: pd.DataFrame, neurons: pd.DataFrame) -> dict:
    """Headline numbers for ``dvc metrics show``: the best model per method and its score."""
    metrics: dict = {"n_selected_neurons": int(neurons["n"].sum()), "n_models": int(ranking["model_id"].nunique())}
    for method, rows in ranking.groupby("method"):
        mean = rows.groupby("model_id")["score"].mean().sort_values(ascending=False)
        metrics[method] = {
            "best_model": mean.index[0],
            "best_mean_score": round(float(mean.iloc[0]), 4),
            "zoo_mean_score": round(float(mean.mean()), 4),
        }
    return metrics


def plot_ranking(ranking: pd.DataFrame, path: str | Path, rule: str, source: str) -> None:
    """Grouped bars: each model's score in each area, one panel per method, best model first."""
    methods = [m for m in ("rsa", "regression") if m in set(ranking["method"])]
    fig, axes = plt.subplots(len(methods), 1, figsize=(11, 3.6 * len(methods)), squeeze=False)
    for ax, method in zip(axes[:, 0], methods):
        rows = ranking[ranking["method"] == method]
        order = rows.groupby("display_name")["score"].mean().sort_values(ascending=False).index
        areas = [a for a in AREAS if a in set(rows["site"])]
        width = 0.8 / max(len(areas), 1)
        x = np.arange(len(order))
        for i, area in enumerate(areas):
            sub = rows[rows["site"] == area].set_index("display_name").reindex(order)
            err = np.vstack([sub["score"] - sub["ci_low"], sub["ci_high"] - sub["score"]]).clip(min=0)
            ax.bar(x + (i - (len(areas) - 1) / 2) * width, sub["score"], width, yerr=err, label=area, capsize=1.5)
        ax.set_xticks(x, order, rotation=30, ha="right")
        ax.set_ylabel("score")
        data = "SIMULATED DATA — " if source == "simulated" else ""
        ax.set_title(f"{data}{METHOD_LABELS.get(method, method)} — {SELECTION_LABELS.get(rule, rule)}")
        ax.axhline(0, color="black", linewidth=0.5)
        ax.legend(ncol=len(areas), fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
