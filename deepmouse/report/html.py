"""The report page: one self-contained HTML file.

Images are embedded as base64 PNG and the style is inline, so the page opens from disk with
no network, no scripts and no fonts to fetch; its Content-Security-Policy forbids any other
load, so a browser would refuse one rather than reach out.
"""

from __future__ import annotations

import base64
import html
import numbers
from typing import Sequence

import pandas as pd

from deepmouse.report.ceilings import CAPTION as CEILINGS_CAPTION, ceilings_table
from deepmouse.report.figure import ReportFigure
from deepmouse.report.tables import TRAINING_CATEGORIES, ReportTables

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

STYLE = """
body { font-family: sans-serif; margin: 0 auto; max-width: 1500px; padding: 0 1.5em 3em; color: #222; }
h1 { margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
.simulated { background: #b00020; color: white; font-weight: bold; padding: 0.7em 1em; margin: 1em 0; }
.note { background: #fff6d5; border-left: 4px solid #e0a800; padding: 0.5em 1em; margin: 0.5em 0; }
.caption { max-width: 70em; }
.figure { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
.figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.2em 0.6em; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
nav ul { columns: 2; }
"""


def render_page(tables: ReportTables, figures: Sequence[ReportFigure], headline: dict[str, dict]) -> str:
    """The report as one HTML document.

    Parameters
    ----------
    tables : the store's results (:func:`~deepmouse.report.tables.load_report_tables`).
    figures : the figures in page order; a figure with a ``note`` shows the note, not its image.
    headline : per area, the headline row (:func:`~deepmouse.report.headline.headline_metrics`).
    """
    shown = [f for f in figures if f.note is None]
    omitted = [f for f in figures if f.note is not None]
    title = "deepmouse report" + (" — SIMULATED DATA" if tables.simulated else "")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if tables.simulated:
        parts.append('<div class="simulated">SIMULATED DATA: these scores come from the embedded simulation '
                     "(data.source: simulated), not from recorded neurons. Set data.source to allen or "
                     "nwb_dir in params.yaml for results on the Allen Brain Observatory.</div>")
    if tables.without_trials:
        parts.append('<div class="note">Mean responses without trials (data.source: table without '
                     "data.table.trials): reliability, CC_max, noise ceilings and normalised scores are not "
                     "computed (shown as —), and neurons were not filtered by reliability. Give trial-level "
                     "responses in data.table.trials to have them.</div>")
    parts += [_run_table(tables), "<h2 id=\"headline\">Headline</h2>", _headline_table(tables, headline)]
    parts += ['<h2 id="ceilings">Two ceilings: split-half and inter-animal</h2>',
              f'<p class="caption">{html.escape(CEILINGS_CAPTION.format(selection=tables.selection))}</p>',
              table_html(ceilings_table(tables.ceilings, tables.ranking, tables.selection))]
    if len(tables.modalities) > 1:
        parts.append(_modality_section(tables))
    parts += ["<h2 id=\"low_ceilings\">Low ceilings</h2>", _low_ceiling_table(tables)]
    parts.append("<nav><h2>Figures</h2><ul>" + "".join(
        f'<li><a href="#{f.name}">{html.escape(f.title)}</a></li>' for f in shown) + "</ul></nav>")
    if omitted:
        parts.append('<div class="note">Not shown, for lack of data in this run:<ul>'
                     + "".join(f"<li><b>{html.escape(f.title)}</b>: {html.escape(f.note)}</li>" for f in omitted)
                     + "</ul></div>")
    for figure in shown:
        parts.append(_figure_section(figure))
    parts.append("<h2>Files</h2><p>Every figure is also under <code>figures/</code> beside this page "
                 "(<code>dvc plots show</code> renders them); the headline is <code>metrics/&lt;area&gt;.json</code> "
                 "(<code>dvc metrics show reports/metrics</code>); the full results are the DuckDB store "
                 "<code>data/deepmouse.duckdb</code> (<code>deepmouse query</code>).</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _modality_section(tables: ReportTables) -> str:
    """Both recordings side by side: per method and area, do they rank the models alike?"""
    caption = (f"<p class=\"caption\">The figures and headline below show the {html.escape(tables.modality)} "
               "recording. Both recordings were scored; per method, layer selection and area: the rank "
               "correlation (Spearman) of the models' scores measured with two-photon calcium imaging and with "
               "Neuropixels spikes, and the best model in each (view <code>modality_agreement</code>; "
               "every ranking of the store is per modality).</p>")
    return "<h2 id=\"modalities\">Two recordings side by side</h2>" + caption + table_html(tables.modality_agreement)


def _run_table(tables: ReportTables) -> str:
    run = tables.run
    rows = {
        "neural data": tables.source,
        "run id": run.get("run_id", "—"),
        "store built": run.get("created", "—"),
        "experiments": run.get("n_experiments", "—"),
        "code revision": run.get("code_revision") or "—",
        "models scored": tables.zoology["model_id"].nunique(),
        "training categories": ", ".join(TRAINING_CATEGORIES[c] for c in TRAINING_CATEGORIES
                                         if c in set(tables.zoology["training_category"])),
        "headline layer selection": tables.selection,
    }
    return "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                               for k, v in rows.items()) + "</table>"


def _headline_table(tables: ReportTables, headline: dict[str, dict]) -> str:
    recorded = tables.neurons.set_index("area")["recorded"]
    frame = pd.DataFrame([{"area": area, "neurons recorded": int(recorded.get(area, 0)), **row}
                          for area, row in headline.items()])
    frame = frame.drop(columns=["selection", "source"], errors="ignore").rename(columns={"neurons": "neurons selected"})
    caption = (f"<p class=\"caption\">Per area: the model ranked first by each method ({tables.selection} layer "
               "selection) and its normalised score (r / √noise ceiling; 1 = as good as the data's reliability "
               "allows). The same numbers are in <code>metrics/&lt;area&gt;.json</code>.</p>")
    return caption + table_html(frame)


def _low_ceiling_table(tables: ReportTables) -> str:
    """The areas whose noise ceiling is below ``scoring.min_ceiling``, apart from the rest: their
    raw scores stand in the figures, but they have no normalised score and normalised means skip them.
    Like the figures, of the figures' recording (``tables.modality``) when both were scored."""
    ranking = tables.ranking
    flagged = ranking[ranking["low_ceiling"] | (ranking["n_low_ceiling"] > 0)]
    # The ceilings differ between the recordings (dF/F vs spike counts): say whose these are.
    of = (f" of the {html.escape(tables.modality)} recording (the other's are in the view "
          "<code>model_ranking</code>, columns <code>low_ceiling</code> and <code>n_low_ceiling</code>)"
          if len(tables.modalities) > 1 else "")
    if flagged.empty:
        return (f'<p class="caption">No area\'s ceiling, and no neuron\'s{of}, is below the minimum ceiling '
                "(scoring.min_ceiling): every normalised score is shown.</p>")
    frame = (flagged.groupby(["method", "layer_selection", "site"], as_index=False)
             .agg(noise_ceiling=("noise_ceiling", "first"), flagged=("low_ceiling", "all"),
                  units_skipped=("n_low_ceiling", "max"), n_neurons=("n_neurons", "max"), models=("model_id", "nunique"))
             .rename(columns={"site": "area", "flagged": "no normalised score",
                              "units_skipped": "neurons or sites skipped"}))
    caption = (f"<p class=\"caption\">Scores{of} whose noise ceiling is below the minimum ceiling (scoring.min_ceiling): "
               "the raw score is kept and ranked, but r / √ceiling of a small ceiling is mostly noise, so there is "
               "no normalised score, and normalised means skip them. Regression counts the neurons left out of "
               "the area's normalised mean.</p>")
    return caption + table_html(frame)


def _figure_section(figure: ReportFigure) -> str:
    image = base64.b64encode(figure.png).decode("ascii")
    table = table_html(figure.table) if figure.table is not None and len(figure.table) else ""
    return (f'<section id="{figure.name}"><h2>{html.escape(figure.title)}</h2>'
            f'<p class="caption">{html.escape(figure.caption)}</p>'
            f'<div class="figure"><img src="data:image/png;base64,{image}" '
            f'alt="{html.escape(figure.title)}">{table}</div></section>')


def table_html(frame: pd.DataFrame) -> str:
    """``frame`` as an HTML table: values escaped, numbers right-aligned to 3 decimals, NaN as —."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for row in frame.itertuples(index=False):
        cells = []
        for value in row:
            if value is None or (isinstance(value, numbers.Real) and pd.isna(value)):
                cells.append('<td class="num">—</td>')
            elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
                cells.append(f'<td class="num">{value}</td>')
            elif isinstance(value, numbers.Real) and not isinstance(value, bool):
                cells.append(f'<td class="num">{value:.3f}</td>')
            else:
                cells.append(f"<td>{html.escape(str(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
