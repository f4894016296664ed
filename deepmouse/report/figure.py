"""One figure of the report: what :mod:`deepmouse.report.plots` draws and :mod:`deepmouse.report.html` lays out.

It lives apart from both so that the page writer and the figure functions each import it and
neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class ReportFigure:
    """One figure of the report.

    Attributes
    ----------
    name : str
        File stem: the PNG is ``figures/<name>.png``.
    title : str
        Heading on the page.
    caption : str
        What the figure shows and how to read it.
    png : bytes
        The image.
    table : DataFrame or None
        The top rows shown beside the figure.
    note : str or None
        Why the figure is empty, when it is; the page shows the note instead of the image.
    """

    name: str
    title: str
    caption: str
    png: bytes
    table: pd.DataFrame | None = None
    note: str | None = None
