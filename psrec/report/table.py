"""Plain-text result tables for the terminal and for run directories."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["format_cell", "format_table"]


def format_cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "-"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.4f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None,
                 headers: Sequence[str] | None = None, right: Sequence[str] = ()) -> str:
    """Align `rows` (dicts) under `columns`; numbers (and the columns in `right`, e.g.
    preformatted "12.5 ±0.4") right-aligned, text left-aligned.

    Example:
        >>> print(format_table([{"mode": "local", "auc": 0.8}]))
        mode   auc
        -----  ------
        local  0.8000
    """
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())
    headers = list(headers or columns)
    cells = [[format_cell(r.get(c)) for c in columns] for r in rows]
    numeric = [c in right or all(isinstance(r.get(c), (int, float)) or r.get(c) is None for r in rows)
               for c in columns]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]

    def line(vals: list[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(vals, widths, numeric)]
        return "  ".join(parts).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out)
