"""What ``deepmouse diff`` found, and how it reads: the result types of :mod:`deepmouse.store.diff`,
their text for the terminal and their JSON for ``--out``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from deepmouse.errors import DeepmouseError


@dataclass(frozen=True)
class Ranking:
    """How a ranking view ranks: ``rank() OVER (PARTITION BY groups ORDER BY value DESC)`` of its items.

    Parameters
    ----------
    groups : the columns of one ranking (e.g. method, layer selection, site).
    item : the column naming what is ranked (a model, an area, a family, a training category).
    value : the column it is ranked by, best first.
    """

    groups: tuple[str, ...]
    item: str
    value: str


@dataclass
class SetDiff:
    """Which models, neurons or sites are in one store only.

    ``only_a`` / ``only_b`` name at most :data:`NAMES_SHOWN` of them; ``n_only_a`` /
    ``n_only_b`` count them all.
    """

    name: str
    n_a: int
    n_b: int
    n_only_a: int
    n_only_b: int
    only_a: list[str]
    only_b: list[str]

    @property
    def agrees(self) -> bool:
        return self.n_only_a == 0 and self.n_only_b == 0


@dataclass
class ColumnDiff:
    """One column of a table: the largest ``|A − B|`` (numeric columns; ``inf`` where NaN or
    NULL meets a number; ``None`` without joined rows or for other types) and the rows beyond
    the tolerance (numeric) or not equal (other types)."""

    name: str
    numeric: bool
    max_abs_diff: float | None
    n_beyond: int


@dataclass
class TableDiff:
    """One table of both stores joined on its keys."""

    name: str
    keys: tuple[str, ...]
    n_a: int
    n_b: int
    n_only_a: int
    n_only_b: int
    n_rows_differ: int
    columns: list[ColumnDiff]
    columns_only_a: list[str] = field(default_factory=list)
    columns_only_b: list[str] = field(default_factory=list)
    examples: list[dict] = field(default_factory=list)

    @property
    def agrees(self) -> bool:
        return self.n_rows_differ == 0 and not self.columns_only_a and not self.columns_only_b


@dataclass
class RankingDiff:
    """One ranking view of both stores: its groups, swapped pairs and items ranked in one store only.

    ``present`` says which stores hold the view (``"both"``, ``"A"``, ``"B"`` or ``"neither"``).
    """

    view: str
    ranking: Ranking
    present: str
    n_groups: int = 0
    n_swaps: int = 0
    n_only_a: int = 0
    n_only_b: int = 0
    swaps: list[dict] = field(default_factory=list)
    unmatched: list[dict] = field(default_factory=list)

    @property
    def agrees(self) -> bool:
        return self.present in ("both", "neither") and self.n_swaps == 0 and self.n_only_a == 0 and self.n_only_b == 0


@dataclass
class StoreDiff:
    """Everything :func:`diff_stores` found; :attr:`agrees` is the verdict."""

    a: Path
    b: Path
    tolerance: float
    runs: dict[str, tuple[str | None, str | None]]
    sets: list[SetDiff]
    tables: list[TableDiff]
    rankings: list[RankingDiff]

    @property
    def agrees(self) -> bool:
        return all(part.agrees for part in (*self.sets, *self.tables, *self.rankings))

    def to_text(self) -> str:
        """The report ``deepmouse diff`` prints: summary lines, then the first differing rows."""
        return _render_text(self)

    def to_dict(self) -> dict:
        """The report as JSON-ready data (``--out FILE.json``)."""
        return _as_dict(self)



def write_report(diff: StoreDiff, out: str | Path) -> None:
    """Write the report to ``out``: JSON for a ``.json`` name, else the text ``deepmouse diff`` prints.

    Raises
    ------
    DeepmouseError
        Naming ``out`` if it cannot be written.
    """
    out = Path(out)
    text = json.dumps(diff.to_dict(), indent=2, default=str) if out.suffix == ".json" else diff.to_text()
    try:
        out.write_text(text + "\n")
    except OSError as err:
        raise DeepmouseError(f"--out {out}: cannot write: {err.strerror or err}") from None



# ------------------------------------------------------------------------------------ reporting
def _render_text(diff: StoreDiff) -> str:
    lines = [f"A: {diff.a}", f"B: {diff.b}",
             f"tolerance {diff.tolerance:g}: numbers agree when |A - B| <= {diff.tolerance:g} x max(1, |A|, |B|)"]
    for column, (a, b) in diff.runs.items():
        lines.append(f"runs.{column}: {'same' if a == b else 'differs'} ({_short(a)}{'' if a == b else ' vs ' + _short(b)})")
    lines.append("")
    for found in diff.sets:
        if found.agrees:
            lines.append(f"{found.name}: same ({found.n_a})")
            continue
        lines.append(f"{found.name}: DIFFER ({found.n_a} in A, {found.n_b} in B)")
        for store, count, names in (("A", found.n_only_a, found.only_a), ("B", found.n_only_b, found.only_b)):
            if count:
                more = f", ... {count - len(names)} more" if count > len(names) else ""
                lines.append(f"  only in {store} ({count}): {', '.join(names)}{more}")
    lines += ["", "tables (rows joined on their keys; largest |A - B| per numeric column):"]
    width = max(len(table.name) for table in diff.tables)
    for table in diff.tables:
        counts = _rows(table.n_a) if table.n_a == table.n_b else f"{_rows(table.n_a)} in A, {table.n_b} in B"
        verdict = "same" if table.agrees else f"DIFFER in {_rows(table.n_rows_differ)}"
        lines.append(f"  {table.name:<{width}}  {verdict} ({counts})")
        numeric = [f"{c.name} {_number(c.max_abs_diff)}" + (f" ({c.n_beyond} beyond)" if c.n_beyond else "")
                   for c in table.columns if c.numeric]
        if numeric:
            lines.append(f"  {'':<{width}}    " + ", ".join(numeric))
        other = [f"{c.name} ({_rows(c.n_beyond)})" for c in table.columns if not c.numeric and c.n_beyond]
        if other:
            lines.append(f"  {'':<{width}}    not equal: " + ", ".join(other))
        for store, only in (("A", table.n_only_a), ("B", table.n_only_b)):
            if only:
                lines.append(f"  {'':<{width}}    {_rows(only)} only in {store}")
        for store, names in (("A", table.columns_only_a), ("B", table.columns_only_b)):
            if names:
                lines.append(f"  {'':<{width}}    column(s) only in {store}: {', '.join(names)}")
    lines += ["", "rankings (pairs ordered differently beyond the tolerance; closer pairs are ties):"]
    width = max(len(ranking.view) for ranking in diff.rankings)
    for ranking in diff.rankings:
        if ranking.present == "neither":
            lines.append(f"  {ranking.view:<{width}}  in neither store")
        elif ranking.present != "both":
            lines.append(f"  {ranking.view:<{width}}  DIFFER: the view is only in {ranking.present}")
        elif ranking.agrees:
            lines.append(f"  {ranking.view:<{width}}  same ({ranking.n_groups} rankings)")
        else:
            parts = [f"{ranking.n_swaps} swapped pairs"] if ranking.n_swaps else []
            parts += [f"{n} ranked only in {s}" for s, n in (("A", ranking.n_only_a), ("B", ranking.n_only_b)) if n]
            lines.append(f"  {ranking.view:<{width}}  DIFFER: {', '.join(parts)} (of {ranking.n_groups} rankings)")
    examples = _examples(diff)
    if examples:
        lines += ["", "first differences:", *examples]
    lines += ["", (f"the runs agree within {diff.tolerance:g}" if diff.agrees else
                   f"the runs differ beyond {diff.tolerance:g}: " + ", ".join(_differing_parts(diff)))]
    return "\n".join(lines)


def _differing_parts(diff: StoreDiff) -> list[str]:
    """The names of the sets, tables and views that differ, each once (``neurons`` is a set and a table)."""
    names = [part.name for part in (*diff.sets, *diff.tables) if not part.agrees]
    names += [ranking.view for ranking in diff.rankings if not ranking.agrees]
    return list(dict.fromkeys(names))


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def _examples(diff: StoreDiff) -> list[str]:
    lines = []
    for table in diff.tables:
        if not table.examples:
            continue
        lines.append(f"  {table.name}:")
        for row in table.examples:
            key = ", ".join(f"{key}={row[key]}" for key in table.keys)
            if row["__only_in"] in ("A", "B"):
                lines.append(f"    {key}: only in {row['__only_in']}")
                continue
            changed = [f"{column.name} {_value(row[column.name + ' (A)'])} vs {_value(row[column.name + ' (B)'])}"
                       for column in table.columns if column.n_beyond and row[column.name + " (differs)"]]
            lines.append(f"    {key}: {', '.join(changed)}")
    for ranking in diff.rankings:
        if not ranking.swaps and not ranking.unmatched:
            continue
        lines.append(f"  {ranking.view} ({ranking.ranking.item} by {ranking.ranking.value}):")
        for row in ranking.swaps:
            group = ", ".join(f"{column}={row[column]}" for column in ranking.ranking.groups)
            lines.append(f"    {group}: {row['item_1']} vs {row['item_2']}: {_value(row['item_1_a'])} vs "
                         f"{_value(row['item_2_a'])} in A, {_value(row['item_1_b'])} vs {_value(row['item_2_b'])} in B")
        for row in ranking.unmatched:
            group = ", ".join(f"{column}={row[column]}" for column in ranking.ranking.groups)
            lines.append(f"    {group}: {row['item']} ranked only in {row['only_in']}")
    return lines


def _as_dict(diff: StoreDiff) -> dict:
    def records(rows: list[dict]) -> list[dict]:
        return [{key: _json_value(value) for key, value in row.items()} for row in rows]

    return {
        "a": str(diff.a), "b": str(diff.b), "tolerance": diff.tolerance, "agrees": diff.agrees,
        "differs": _differing_parts(diff),
        "runs": {column: {"a": a, "b": b} for column, (a, b) in diff.runs.items()},
        "sets": [{"name": s.name, "agrees": s.agrees, "n_a": s.n_a, "n_b": s.n_b, "n_only_a": s.n_only_a,
                  "n_only_b": s.n_only_b, "only_a": s.only_a, "only_b": s.only_b} for s in diff.sets],
        "tables": [{"name": t.name, "agrees": t.agrees, "keys": list(t.keys), "n_a": t.n_a, "n_b": t.n_b,
                    "n_only_a": t.n_only_a, "n_only_b": t.n_only_b, "n_rows_differ": t.n_rows_differ,
                    "columns": [{"name": c.name, "numeric": c.numeric, "max_abs_diff": _json_value(c.max_abs_diff),
                                 "n_beyond": c.n_beyond} for c in t.columns],
                    "columns_only_a": t.columns_only_a, "columns_only_b": t.columns_only_b,
                    "first_rows": records(t.examples)} for t in diff.tables],
        "rankings": [{"view": r.view, "agrees": r.agrees, "present": r.present, "groups": list(r.ranking.groups),
                      "item": r.ranking.item, "value": r.ranking.value, "n_rankings": r.n_groups,
                      "n_swaps": r.n_swaps, "n_only_a": r.n_only_a, "n_only_b": r.n_only_b,
                      "first_swaps": records(r.swaps), "first_unmatched": records(r.unmatched)}
                     for r in diff.rankings],
    }


def _json_value(value):
    # JSON has no NaN or infinity: say them in words, as the text report does.
    if isinstance(value, float) and not math.isfinite(value):
        return _value(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf (NaN, NULL or an infinity on one side only)"
    return "0" if value == 0 else f"{value:.2g}"


def _value(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else repr(value)
    return str(value)


def _short(value: str | None) -> str:
    if value is None:
        return "none"
    return value if len(value) <= 16 else value[:12] + "..."
