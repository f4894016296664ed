"""The report reads the published store's tables and views: nothing else.

Everything the figures, the page and the headline metrics show is loaded here, once, into a
:class:`ReportTables`; nothing downstream opens the store again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from deepmouse.config import AREAS
from deepmouse.store.build import open_store

VIEWS = ("model_ranking", "layer_profile", "trained_vs_random", "method_agreement", "taskonomy_ranking",
         "modality_agreement", "ceilings")
"""The store's views the report reads (``open_store`` checks they exist)."""

TRAINING_CATEGORIES = {
    "supervised": "ImageNet (supervised)",
    "random": "untrained (random initialisation)",
    "self-supervised": "self-supervised",
    "taskonomy": "Taskonomy",
}
"""The store's ``models.training_category`` values, in report order, with their labels."""


@dataclass(frozen=True)
class ReportTables:
    """The store's results as the report uses them.

    Attributes
    ----------
    source : str
        The neural data the scores come from (``simulated``, ``nwb_dir`` or ``allen``);
        ``simulated`` if any run or score row says so.
    run : dict
        The ``runs`` row: ``run_id``, ``created``, ``code_revision``, ``n_experiments``,
        ``trial_responses`` (false: means without trials, so no ceilings).
    selection : str
        The layer-selection rule of the headline numbers: ``cv`` when stored, else ``max``.
    areas : tuple of str
        The areas with neurons or scores, along the visual hierarchy.
    ranking : DataFrame
        ``model_ranking`` per area, every layer selection (one row per model × method ×
        selection × area).
    profile : DataFrame
        ``layer_profile`` per area: ``model_id, method, site, depth, score``.
    neurons : DataFrame
        Per area: ``area, recorded, selected``.
    trained_vs_random : DataFrame
        The ``trained_vs_random`` view (empty when no architecture has both variants).
    agreement : DataFrame
        ``method_agreement`` per area: ``layer_selection, site, n_models, spearman_r``.
    taskonomy : DataFrame
        ``taskonomy_ranking`` (empty without Taskonomy encoders).
    zoology : DataFrame
        One row per scored model: ``model_id, display_name, training_category, family,
        n_params, imagenet_top1, imagenet_top1_source, n_layers`` (the store's ``models`` and
        ``layers`` tables).
    ceilings : DataFrame
        The ``ceilings`` view: split-half ceiling and inter-animal consistency per area and method.
    modality : str
        The recording every table above holds (``calcium`` when scored, else ``neuropixels``):
        rankings are never pooled over recordings.
    modalities : tuple of str
        Every recording with scores in the store.
    modality_agreement : DataFrame
        Per method, layer selection and area, the two recordings side by side: ``n_models``,
        ``spearman_r`` and each recording's best model (the ``modality_agreement`` view; empty
        with one recording).
    """

    source: str
    run: dict
    selection: str
    areas: tuple[str, ...]
    ranking: pd.DataFrame
    profile: pd.DataFrame
    neurons: pd.DataFrame
    trained_vs_random: pd.DataFrame
    agreement: pd.DataFrame
    taskonomy: pd.DataFrame
    zoology: pd.DataFrame
    ceilings: pd.DataFrame
    modality: str = "calcium"
    modalities: tuple[str, ...] = ("calcium",)
    modality_agreement: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def simulated(self) -> bool:
        """True when the scores come from the embedded simulation, not recorded neurons."""
        return self.source == "simulated"

    @property
    def without_trials(self) -> bool:
        """True when the neurons came as mean responses without trials: no reliability, no ceilings."""
        given = self.run.get("trial_responses")
        return given is not None and not pd.isna(given) and not bool(given)


def load_report_tables(db_path: str | Path) -> ReportTables:
    """Read everything the report shows from the published store at ``db_path``.

    Raises
    ------
    StoreError
        In one line naming ``db_path``, if it is missing, damaged or lacks a table or a view
        of :data:`VIEWS`.
    """
    con = open_store(db_path, views=VIEWS)
    try:
        runs = con.execute("SELECT * FROM runs").fetchdf()  # trial_responses: only in stores built since tables
        score_sources = {row[0] for row in con.execute("SELECT DISTINCT source FROM model_scores").fetchall()}
        rules = {row[0] for row in con.execute("SELECT DISTINCT layer_selection FROM model_scores").fetchall()}
        modalities = tuple(m for m in ("calcium", "neuropixels") if m in {row[0] for row in con.execute(
            "SELECT DISTINCT modality FROM model_scores").fetchall()}) or ("calcium",)
        modality = modalities[0]
        ranking = con.execute("SELECT * FROM model_ranking WHERE site_kind = 'area' AND modality = ?",
                              [modality]).fetchdf()
        profile = con.execute("SELECT model_id, method, site, depth, score FROM layer_profile "
                              "WHERE site_kind = 'area' AND modality = ?", [modality]).fetchdf()
        neurons = con.execute(
            "SELECT area, count(*) AS recorded, count(*) FILTER (WHERE selected) AS selected "
            "FROM neurons WHERE modality = ? GROUP BY area", [modality]).fetchdf()
        trained_vs_random = con.execute("SELECT * FROM trained_vs_random WHERE modality = ?", [modality]).fetchdf()
        agreement = con.execute("SELECT * FROM method_agreement WHERE site_kind = 'area' AND modality = ?",
                                [modality]).fetchdf()
        taskonomy = con.execute("SELECT * FROM taskonomy_ranking WHERE modality = ?", [modality]).fetchdf()
        ceilings = con.execute("SELECT * FROM ceilings WHERE modality = ?", [modality]).fetchdf()
        modality_agreement = con.execute(
            "SELECT method, layer_selection, area, any_value(n_models) AS n_models, "
            "any_value(spearman_r) AS spearman_r, "
            "any_value(model_id) FILTER (WHERE calcium_rank = 1) AS best_calcium, "
            "any_value(model_id) FILTER (WHERE neuropixels_rank = 1) AS best_neuropixels "
            "FROM modality_agreement GROUP BY ALL ORDER BY method, layer_selection").fetchdf()
        models = con.execute(
            "SELECT m.model_id, m.display_name, m.training_category, m.family, m.n_params, m.imagenet_top1, "
            "m.imagenet_top1_source, count(l.layer_index) AS n_layers FROM models AS m LEFT JOIN layers AS l USING (model_id) "
            "WHERE m.model_id IN (SELECT model_id FROM model_scores) GROUP BY ALL ORDER BY m.model_id").fetchdf()
    finally:
        con.close()
    sources = set(runs["source"]) | score_sources
    source = "simulated" if "simulated" in sources else ", ".join(sorted(sources)) or "unknown"
    run = runs.iloc[0].to_dict() if len(runs) else {}
    return ReportTables(
        source=source, run=run, selection="cv" if "cv" in rules else "max",
        areas=ordered_areas([*ranking["site"], *neurons["area"]]),
        ranking=ranking, profile=profile,
        neurons=neurons.set_index("area").reindex(ordered_areas(neurons["area"])).reset_index(),
        trained_vs_random=trained_vs_random, agreement=agreement, taskonomy=taskonomy,
        zoology=models, ceilings=ceilings, modality=modality, modalities=modalities,
        modality_agreement=modality_agreement.assign(
            area=lambda f: pd.Categorical(f["area"], ordered_areas(f["area"]), ordered=True))
        .sort_values(["method", "layer_selection", "area"]).assign(area=lambda f: f["area"].astype(str)),
    )


def ordered_areas(areas) -> tuple[str, ...]:
    """``areas`` without repeats, along the visual hierarchy of :data:`deepmouse.config.AREAS`
    (areas it does not list after, alphabetically)."""
    return tuple(sorted(set(areas), key=lambda area: (AREAS.index(area) if area in AREAS else len(AREAS), area)))
