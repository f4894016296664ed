"""The report's figures, each with the table shown beside it, and the report writer.

Every figure is a function of :class:`~deepmouse.report.tables.ReportTables` that returns a
:class:`~deepmouse.report.figure.ReportFigure`: the PNG, what it shows, and a short table of its top rows. A figure
with nothing to show (no Taskonomy encoders in the run, say) still gets a PNG, which says
why, because ``dvc.yaml`` declares every file of :data:`FIGURES` as a plot.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on the machines this runs on
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from deepmouse.report.figure import ReportFigure
from deepmouse.report.headline import write_headline
from deepmouse.report.html import render_page
from deepmouse.report.tables import TRAINING_CATEGORIES, ReportTables, load_report_tables

METHODS = ("rsa", "cka", "regression")
METHOD_LABELS = {"rsa": "RSA (r of RDMs)", "cka": "linear CKA", "regression": "ridge regression (mean held-out r)"}
METHOD_SHORT = {"rsa": "RSA", "cka": "CKA", "regression": "regression"}
SELECTION_LABELS = {"cv": "layer chosen and scored on disjoint data (cv)", "max": "best layer per area (max, optimistic)"}
CATEGORY_COLORS = {"supervised": "tab:blue", "random": "tab:gray", "self-supervised": "tab:green",
                   "taskonomy": "tab:purple"}
DPI = 100
OVERVIEW_MODELS = 25
"""The overview shows at most this many models per method (the best); the category figures show all."""


def data_label(tables: ReportTables) -> str:
    """The title prefix that keeps simulated results from passing for recorded ones."""
    return "SIMULATED DATA — " if tables.simulated else ""


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _placeholder(tables: ReportTables, title: str, note: str) -> bytes:
    """A small PNG that says why a figure is empty."""
    fig = plt.figure(figsize=(7, 1.6))
    fig.text(0.5, 0.68, f"{data_label(tables)}{title}", ha="center", fontsize=11, weight="bold")
    fig.text(0.5, 0.32, note, ha="center", fontsize=10, wrap=True)
    return _png(fig)


def _empty(tables: ReportTables, name: str, title: str, caption: str, note: str) -> ReportFigure:
    return ReportFigure(name, title, caption, _placeholder(tables, title, note), None, note)


def _methods(frame: pd.DataFrame) -> list[str]:
    present = set(frame["method"])
    return [m for m in METHODS if m in present] + sorted(present - set(METHODS))


def _area_colors(tables: ReportTables) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10")
    return {area: cmap(i % 10) for i, area in enumerate(tables.areas)}


def _finish(fig: plt.Figure, title: str, categories=()) -> None:
    """Title the figure and, if ``categories`` are given, add their colour legend below the panels."""
    fig.suptitle(title, fontsize=11)
    bottom = 0.0
    if categories:
        handles = [plt.Line2D([], [], marker="o", linestyle="", color=CATEGORY_COLORS.get(c, "black"),
                              label=TRAINING_CATEGORIES.get(c, c)) for c in categories]
        fig.legend(handles=handles, fontsize=8, loc="lower center", ncol=len(handles), frameon=False)
        bottom = 0.5 / fig.get_figheight()
    fig.tight_layout(rect=(0, bottom, 1, 1))


def _categories(frame: pd.DataFrame) -> list[str]:
    return [c for c in TRAINING_CATEGORIES if c in set(frame["training_category"])]


def _rho_text(rho: float, n: int) -> str:
    return f"ρ = {rho:.2f} (n = {n})" if not np.isnan(rho) else f"ρ undefined (n = {n})"


def _mean_scores(ranking: pd.DataFrame, rule: str) -> pd.DataFrame:
    """Per method and model at layer selection ``rule``: the mean over areas of score and normalised
    score; the latter skips the areas flagged ``low_ceiling``, counted in ``n_low_ceiling``."""
    rows = ranking[ranking["layer_selection"] == rule].assign(n_low_ceiling=lambda f: f["low_ceiling"].astype(int))
    return (rows.groupby(["method", "model_id", "display_name", "training_category"], as_index=False)
            .agg(score=("score", "mean"), normalized_score=("normalized_score", "mean"),
                 n_low_ceiling=("n_low_ceiling", "sum")))


# ------------------------------------------------------------------------------ rankings
def plot_overview(tables: ReportTables) -> ReportFigure:
    """Every model's score in every area (grouped bars, headline selection), best model first."""
    rule = tables.selection
    ranking = tables.ranking[tables.ranking["layer_selection"] == rule]
    methods = _methods(ranking)
    title = "All models, every area"
    caption = (f"Each model's score in each area ({SELECTION_LABELS[rule]}), with its bootstrap interval; "
               f"models ordered by their mean score over the areas (at most the best {OVERVIEW_MODELS} "
               "per method; the rankings per training category below show every model).")
    if ranking.empty:
        return _empty(tables, "ranking", title, caption, "The store holds no per-area model scores.")
    colors = _area_colors(tables)
    n_shown = min(OVERVIEW_MODELS, ranking["model_id"].nunique())
    fig, axes = plt.subplots(len(methods), 1, figsize=(max(11, 0.45 * n_shown), 3.6 * len(methods)), squeeze=False)
    for ax, method in zip(axes[:, 0], methods):
        rows = ranking[ranking["method"] == method]
        order = rows.groupby("model_id")["score"].mean().sort_values(ascending=False).index[:OVERVIEW_MODELS]
        areas = [a for a in tables.areas if a in set(rows["site"])]
        width = 0.8 / max(len(areas), 1)
        x = np.arange(len(order))
        for i, area in enumerate(areas):
            sub = rows[rows["site"] == area].set_index("model_id").reindex(order)
            err = np.vstack([sub["score"] - sub["ci_low"], sub["ci_high"] - sub["score"]]).clip(min=0)
            ax.bar(x + (i - (len(areas) - 1) / 2) * width, sub["score"], width, yerr=err, label=area,
                   capsize=1.5, color=colors[area])
        labels = rows.drop_duplicates("model_id").set_index("model_id")["display_name"].reindex(order)
        ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("score")
        ax.set_title(f"{METHOD_LABELS.get(method, method)} — {SELECTION_LABELS[rule]}", fontsize=10)
        ax.axhline(0, color="black", linewidth=0.5)
        ax.legend(ncol=len(areas), fontsize=8, loc="upper right")
    _finish(fig, f"{data_label(tables)}All models, every area")
    top = (_mean_scores(tables.ranking, rule).sort_values(["method", "score"], ascending=[True, False])
           .groupby("method").head(5))
    table = pd.DataFrame({"method": top["method"], "model": top["display_name"],
                          "mean score": top["score"], "mean normalised": top["normalized_score"],
                          "areas skipped (low ceiling)": top["n_low_ceiling"]})
    return ReportFigure("ranking", title, caption, _png(fig), table)


def plot_category_ranking(tables: ReportTables, category: str) -> ReportFigure:
    """Models of one training category ranked per method and area, ``cv`` and ``max`` side by side.

    One panel per method (rows) and area (columns); within a row the models are ordered by
    their mean ``cv`` score over the areas, best at the top. A filled dot with a bar is the
    ``cv`` score and its bootstrap interval; an open circle, joined to it, is the ``max``
    score: the gap is the optimism of choosing the layer on the data that score it.
    """
    label = TRAINING_CATEGORIES.get(category, category)
    name = f"ranking_{category}"
    title = f"Ranking: {label} models"
    caption = ("Per method (rows) and area (columns), each model's score: filled dot and bar = cv selection "
               "with its bootstrap interval (layer chosen on data the score never sees); open circle = max "
               "selection (best layer, optimistic); the line between them is the optimism of max. "
               "Models ordered by mean cv score over the areas, best at the top.")
    rows = tables.ranking[tables.ranking["training_category"] == category]
    if rows.empty:
        return _empty(tables, name, title, caption, f"No {label} models were scored in this run.")
    methods = _methods(rows)
    areas = [a for a in tables.areas if a in set(rows["site"])]
    rule = tables.selection
    n_models = rows["model_id"].nunique()
    fig, axes = plt.subplots(len(methods), len(areas), squeeze=False, sharex="row",
                             figsize=(2.0 + 2.1 * len(areas), len(methods) * (0.9 + 0.24 * n_models)))
    for i, method in enumerate(methods):
        sub = rows[rows["method"] == method]
        order = (sub[sub["layer_selection"] == rule].groupby("model_id")["score"].mean()
                 .sort_values(ascending=False).index)
        labels = sub.drop_duplicates("model_id").set_index("model_id")["display_name"].reindex(order)
        for j, area in enumerate(areas):
            ax = axes[i, j]
            cell = sub[sub["site"] == area]
            chosen = cell[cell["layer_selection"] == rule].set_index("model_id").reindex(order)
            y = np.arange(len(order))
            err = np.vstack([chosen["score"] - chosen["ci_low"], chosen["ci_high"] - chosen["score"]]).clip(min=0)
            ax.errorbar(chosen["score"], y, xerr=err, fmt="o", color=CATEGORY_COLORS.get(category, "black"),
                        markersize=4, elinewidth=1, capsize=0, label=f"{rule} (± CI)")
            if rule != "max" and "max" in set(cell["layer_selection"]):
                best = cell[cell["layer_selection"] == "max"].set_index("model_id").reindex(order)
                ax.hlines(y, chosen["score"], best["score"], color="black", linewidth=0.6)
                ax.plot(best["score"], y, "o", markerfacecolor="white", markeredgecolor="black", markersize=4,
                        label="max")
            ax.axvline(0, color="black", linewidth=0.4)
            ax.set_ylim(len(order) - 0.5, -0.5)
            ax.set_yticks(y, labels if j == 0 else [""] * len(order), fontsize=7)
            ax.grid(axis="x", linewidth=0.3)
            ax.tick_params(axis="x", labelsize=7)
            ax.set_title(f"{METHOD_SHORT.get(method, method)} · {area}", fontsize=9)
            if i == len(methods) - 1:
                ax.set_xlabel("score", fontsize=8)
    axes[0, -1].legend(fontsize=7, loc="lower right")
    _finish(fig, f"{data_label(tables)}{label} models, ranked per method and area")
    means = {r: _mean_scores(rows, r).set_index(["method", "model_id"]) for r in set(rows["layer_selection"])}
    top = (means[rule].reset_index().sort_values(["method", "score"], ascending=[True, False])
           .groupby("method").head(5))
    table = pd.DataFrame({"method": top["method"].to_numpy(), "model": top["display_name"].to_numpy(),
                          f"mean {rule}": top["score"].to_numpy()})
    if rule != "max" and "max" in means:
        keys = list(zip(top["method"], top["model_id"]))
        table["mean max"] = means["max"].reindex(keys)["score"].to_numpy()
        table["max − cv"] = table["mean max"] - table[f"mean {rule}"]
    return ReportFigure(name, title, caption, _png(fig), table)


# ----------------------------------------------------------------------- what shapes a score
def plot_trained_vs_random(tables: ReportTables) -> ReportFigure:
    """Each architecture's trained score against its untrained twin's, per method and area."""
    rule = tables.selection
    title = "Trained vs. untrained, per architecture"
    caption = (f"Each point is one trained model and its randomly initialised twin in one area ({rule} selection): "
               "above the diagonal, training made the architecture more brain-like; below, less.")
    pairs = tables.trained_vs_random[tables.trained_vs_random["layer_selection"] == rule]
    if pairs.empty:
        return _empty(tables, "trained_vs_random", title, caption,
                      "No architecture was scored both trained and untrained in this run "
                      "(the trained_vs_random view is empty).")
    names = tables.zoology.set_index("model_id")["display_name"]
    colors = _area_colors(tables)
    methods = _methods(pairs)
    fig, axes = plt.subplots(1, len(methods), figsize=(4.6 * len(methods), 4.4), squeeze=False)
    for ax, method in zip(axes[0], methods):
        sub = pairs[pairs["method"] == method]
        for area in [a for a in tables.areas if a in set(sub["area"])]:
            cell = sub[sub["area"] == area]
            ax.scatter(cell["random_score"], cell["trained_score"], s=22, color=colors[area], label=area)
        low = min(sub["random_score"].min(), sub["trained_score"].min(), 0.0)
        high = max(sub["random_score"].max(), sub["trained_score"].max())
        pad = 0.05 * (high - low or 1.0)
        ax.plot([low - pad, high + pad], [low - pad, high + pad], color="black", linewidth=0.6)
        ax.set_xlim(low - pad, high + pad)
        ax.set_ylim(low - pad, high + pad)
        ax.set_aspect("equal")
        ax.set_xlabel("untrained score")
        ax.set_ylabel("trained score")
        ax.set_title(METHOD_LABELS.get(method, method), fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    _finish(fig, f"{data_label(tables)}Trained vs. untrained ({SELECTION_LABELS[rule]})")
    summary = (pairs.groupby(["method", "trained_model_id", "random_model_id"], as_index=False)
               .agg(difference=("difference", "mean"), better=("difference", lambda d: int((d > 0).sum())),
                    areas=("difference", "size"))
               .sort_values(["method", "difference"], ascending=[True, False]))
    table = pd.DataFrame({
        "method": summary["method"], "trained": summary["trained_model_id"].map(names),
        "untrained": summary["random_model_id"].map(names),
        "mean trained − untrained": summary["difference"],
        "areas where trained is higher": [f"{b} of {n}" for b, n in zip(summary["better"], summary["areas"])],
    })
    return ReportFigure("trained_vs_random", title, caption, _png(fig), table)


def plot_layer_depth(tables: ReportTables) -> ReportFigure:
    """The relative depth (0 = input, 1 = output) of each model's best layer, per area and method."""
    rule = tables.selection
    title = "Best-layer depth per area"
    caption = (f"Relative depth (0 = first layer, 1 = last) of the layer each model uses for each area "
               f"({rule} selection: for cv, the layer chosen most often over folds). One dot per model, "
               "coloured by training category; the black bar is the median over models.")
    rows = tables.ranking[tables.ranking["layer_selection"] == rule]
    if rows.empty:
        return _empty(tables, "layer_depth", title, caption, "The store holds no per-area model scores.")
    methods = _methods(rows)
    areas = [a for a in tables.areas if a in set(rows["site"])]
    models = sorted(set(rows["model_id"]))
    offset = {m: (k / max(len(models) - 1, 1) - 0.5) * 0.5 for k, m in enumerate(models)}
    fig, axes = plt.subplots(1, len(methods), figsize=(1.2 + 1.0 * len(areas) * len(methods), 3.8),
                             squeeze=False, sharey=True)
    for ax, method in zip(axes[0], methods):
        sub = rows[rows["method"] == method]
        for k, area in enumerate(areas):
            cell = sub[sub["site"] == area]
            ax.scatter(k + cell["model_id"].map(offset), cell["best_layer_depth"], s=14,
                       c=[CATEGORY_COLORS.get(c, "black") for c in cell["training_category"]])
            ax.hlines(cell["best_layer_depth"].median(), k - 0.35, k + 0.35, color="black", linewidth=2)
        ax.set_xticks(range(len(areas)), areas, fontsize=8)
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(METHOD_LABELS.get(method, method), fontsize=9)
        ax.grid(axis="y", linewidth=0.3)
    axes[0, 0].set_ylabel("relative depth of the best layer")
    _finish(fig, f"{data_label(tables)}Best-layer depth along the visual hierarchy ({rule})", _categories(rows))
    median = rows.pivot_table(index="site", columns="method", values="best_layer_depth", aggfunc="median")
    table = median.reindex(areas)[methods].reset_index().rename(columns={"site": "area"})
    table.columns = ["area", *[f"median depth, {m}" for m in methods]]
    return ReportFigure("layer_depth", title, caption, _png(fig), table)


def _spearman(x: pd.Series, y: pd.Series) -> float:
    """Spearman's rank correlation; NaN for fewer than 3 pairs or a constant variable."""
    keep = x.notna() & y.notna()
    x, y = x[keep], y[keep]
    if len(x) < 3 or x.nunique() < 2 or y.nunique() < 2:
        return float("nan")
    return float(x.rank().corr(y.rank()))


def plot_method_agreement(tables: ReportTables) -> ReportFigure:
    """RSA score against regression score, one panel per area, with their rank correlation."""
    rule = tables.selection
    title = "RSA vs. regression"
    caption = (f"Each model's RSA score against its regression score in each area ({rule} selection), "
               "coloured by training category; ρ is the Spearman rank correlation of the two methods' "
               "model scores (view method_agreement). High ρ: the methods rank models alike.")
    rows = tables.ranking[tables.ranking["layer_selection"] == rule]
    wide = rows.pivot_table(index=["model_id", "display_name", "training_category", "site"], columns="method",
                            values="score").reset_index()
    if not {"rsa", "regression"} <= set(wide.columns) or wide[["rsa", "regression"]].dropna().empty:
        return _empty(tables, "method_agreement", title, caption,
                      "RSA and regression scores are not both in the store.")
    agreement = tables.agreement.set_index(["layer_selection", "site"])
    areas = [a for a in tables.areas if a in set(wide["site"])]
    ncols = min(3, len(areas))
    nrows = -(-len(areas) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 3.2 * nrows), squeeze=False)
    for ax, area in zip(axes.flat, areas):
        cell = wide[wide["site"] == area]
        ax.scatter(cell["rsa"], cell["regression"], s=18,
                   c=[CATEGORY_COLORS.get(c, "black") for c in cell["training_category"]])
        if len(cell) <= 12:
            for _, point in cell.iterrows():
                ax.annotate(point["display_name"], (point["rsa"], point["regression"]), fontsize=6,
                            xytext=(3, 3), textcoords="offset points")
        rho = agreement["spearman_r"].get((rule, area), float("nan"))
        ax.set_title(f"{area}: {_rho_text(rho, len(cell))}", fontsize=9)
        ax.set_xlabel("RSA score", fontsize=8)
        ax.set_ylabel("regression score", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(areas):]:
        ax.set_axis_off()
    _finish(fig, f"{data_label(tables)}Do RSA and regression agree? ({SELECTION_LABELS[rule]})", _categories(wide))
    table = pd.DataFrame({"area": areas, "models": [int((wide["site"] == a).sum()) for a in areas]})
    for r in sorted(set(tables.agreement["layer_selection"]), key=lambda r: r != rule):
        table[f"ρ ({r})"] = [agreement["spearman_r"].get((r, a), float("nan")) for a in areas]
    return ReportFigure("method_agreement", title, caption, _png(fig), table)


def plot_taskonomy(tables: ReportTables) -> ReportFigure:
    """The Taskonomy encoders (one architecture, many tasks) by task, grouped by task cluster."""
    rule = tables.selection
    title = "Taskonomy tasks by cluster"
    caption = (f"Each Taskonomy encoder's mean score over the areas ({rule} selection; dots: single areas), "
               "grouped by task cluster (clusters ordered by their mean): which training tasks make "
               "representations that predict mouse visual cortex?")
    rows = tables.taskonomy[tables.taskonomy["layer_selection"] == rule].copy()
    if rows.empty:
        return _empty(tables, "taskonomy", title, caption, "No Taskonomy encoders were scored in this run.")
    rows["task_cluster"] = rows["task_cluster"].fillna("(no cluster)")
    rows["task"] = rows["display_name"].str.replace("Taskonomy: ", "", regex=False)
    clusters = rows.groupby("task_cluster")["score"].mean().sort_values(ascending=False).index
    cmap = plt.get_cmap("Set2")
    cluster_color = {c: cmap(i % 8) for i, c in enumerate(clusters)}
    methods = _methods(rows)
    n_tasks = rows["model_id"].nunique()
    fig, axes = plt.subplots(1, len(methods), figsize=(5.2 * len(methods), 1.2 + 0.26 * n_tasks), squeeze=False)
    for ax, method in zip(axes[0], methods):
        sub = rows[rows["method"] == method]
        mean = sub.groupby(["task_cluster", "task"], as_index=False)["score"].mean()
        mean["cluster_rank"] = mean["task_cluster"].map({c: k for k, c in enumerate(clusters)})
        mean = mean.sort_values(["cluster_rank", "score"], ascending=[True, False]).reset_index(drop=True)
        y = np.arange(len(mean))
        ax.barh(y, mean["score"], color=[cluster_color[c] for c in mean["task_cluster"]])
        per_area = sub.merge(mean[["task"]].reset_index(), on="task")
        ax.plot(per_area["score"], per_area["index"], ".", color="black", markersize=3)
        ax.set_yticks(y, mean["task"], fontsize=7)
        ax.set_ylim(len(mean) - 0.5, -0.5)
        ax.axvline(0, color="black", linewidth=0.4)
        ax.set_xlabel("score")
        ax.set_title(METHOD_LABELS.get(method, method), fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=cluster_color[c], label=c) for c in clusters]
    axes[0, -1].legend(handles=handles, fontsize=7, loc="lower right", title="cluster", title_fontsize=7)
    _finish(fig, f"{data_label(tables)}Taskonomy encoders by task cluster ({rule})")
    cluster = (rows.groupby(["method", "task_cluster"], as_index=False)
               .agg(tasks=("model_id", "nunique"), mean_score=("score", "mean"))
               .sort_values(["method", "mean_score"], ascending=[True, False]))
    table = cluster.rename(columns={"task_cluster": "cluster", "mean_score": "mean score"})
    return ReportFigure("taskonomy", title, caption, _png(fig), table)


def plot_zoology(tables: ReportTables) -> ReportFigure:
    """Mean score over areas against ImageNet top-1 accuracy, parameter count and depth."""
    rule = tables.selection
    title = "Model zoology"
    caption = (f"Each model's mean score over the areas ({rule} selection) against its ImageNet top-1 accuracy "
               "(trained models; from the zoo registry), its parameter count and its depth (number of layers, "
               "as the store's layers table counts them), coloured by training category; ρ is Spearman's "
               "rank correlation.")
    scores = _mean_scores(tables.ranking, rule)
    if scores.empty:
        return _empty(tables, "zoology", title, caption, "The store holds no per-area model scores.")
    zoo = tables.zoology.drop(columns=["display_name", "training_category"])
    data = scores.merge(zoo, on="model_id", how="left")
    n_params = pd.to_numeric(data["n_params"], errors="coerce").astype(float)
    data["log10 parameters"] = np.log10(n_params.where(n_params > 0))
    predictors = {"imagenet_top1": "ImageNet top-1 accuracy (%)", "log10 parameters": "parameters (log10)",
                  "n_layers": "depth (number of layers)"}
    methods = _methods(data)
    fig, axes = plt.subplots(len(methods), len(predictors), figsize=(10.5, 3.0 * len(methods)), squeeze=False)
    notes = []
    if data["imagenet_top1"].isna().all():
        notes.append("no scored model has an ImageNet top-1 accuracy in the zoo registry")
    correlations = []
    for i, method in enumerate(methods):
        sub = data[data["method"] == method]
        for j, (column, label) in enumerate(predictors.items()):
            ax = axes[i, j]
            x = pd.to_numeric(sub[column], errors="coerce")
            shown = x.notna()
            ax.scatter(x[shown], sub["score"][shown], s=16,
                       c=[CATEGORY_COLORS.get(c, "black") for c in sub["training_category"][shown]])
            rho = _spearman(x, sub["score"])
            correlations.append({"method": method, "against": label, "models": int(shown.sum()), "ρ": rho})
            if not shown.any():
                ax.text(0.5, 0.5, "no values in this run", transform=ax.transAxes, ha="center", fontsize=9,
                        color="gray")
                ax.set_xticks([])
                ax.set_yticks([])
            ax.set_title(_rho_text(rho, int(shown.sum())), fontsize=8)
            ax.tick_params(labelsize=7)
            if i == len(methods) - 1:
                ax.set_xlabel(label, fontsize=8)
        axes[i, 0].set_ylabel(f"{method}: mean score", fontsize=8)
    _finish(fig, f"{data_label(tables)}Model zoology ({rule})", _categories(data))
    note = "; ".join(notes) or None
    caption = caption + (f" Note: {note}." if note else "")
    return ReportFigure("zoology", title, caption, _png(fig), pd.DataFrame(correlations))


# --------------------------------------------------------------------------------- writer
FIGURES = {
    "ranking": plot_overview,
    **{f"ranking_{c}": functools.partial(plot_category_ranking, category=c) for c in TRAINING_CATEGORIES},
    "trained_vs_random": plot_trained_vs_random,
    "layer_depth": plot_layer_depth,
    "method_agreement": plot_method_agreement,
    "taskonomy": plot_taskonomy,
    "zoology": plot_zoology,
}
"""Every figure, by file stem, in page order; ``dvc.yaml`` declares ``figures/<stem>.png`` for each."""


def write_report(db_path: str | Path, out_dir: str | Path) -> dict:
    """Write the report of the store at ``db_path`` into ``out_dir``.

    Writes ``index.html`` (one self-contained page: images embedded, no network),
    ``figures/<name>.png`` for every figure of :data:`FIGURES`, ``figures/layer_profile.csv``
    (DVC plot data) and ``metrics/<area>.json`` (the headline for ``dvc metrics show``).

    Returns
    -------
    dict
        Per method, the model with the best mean score over the areas at the headline layer
        selection: ``{method: {"best_model": model_id, "best_mean_score": float}}``.

    Raises
    ------
    StoreError
        If the store at ``db_path`` is missing, damaged or incomplete.
    """
    out_dir = Path(out_dir)
    tables = load_report_tables(db_path)
    figures = [plot(tables) for plot in FIGURES.values()]
    figures_dir = out_dir / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    for figure in figures:
        (figures_dir / f"{figure.name}.png").write_bytes(figure.png)
    (tables.profile.sort_values(["method", "site", "model_id", "depth"])
     .to_csv(figures_dir / "layer_profile.csv", index=False))
    headline = write_headline(tables, out_dir / "metrics")
    (out_dir / "index.html").write_text(render_page(tables, figures, headline), encoding="utf-8")
    best = _mean_scores(tables.ranking, tables.selection).sort_values(["score", "model_id"], ascending=[False, True])
    return {method: {"best_model": rows["model_id"].iloc[0], "best_mean_score": round(float(rows["score"].iloc[0]), 4)}
            for method, rows in best.groupby("method", sort=False)}
