"""What a run states about its splits: the rows trained, validated and tested, per file, and
where the test rows came from (`results.json` extra `splits`), so that no run trains on a
silently different split than the one configured."""
from __future__ import annotations

from typing import Any

from psrec.core.ranges import RowRanges
from psrec.data.base import DataSource

__all__ = ["split_report"]


def _overlap(a: int, b: int, c: int, d: int) -> int:
    return max(0, min(b, d) - max(a, c))


def split_report(cfg, source: DataSource, rr: RowRanges) -> dict[str, Any]:
    """{train, valid, test: [{file, rows}], test_from, ...}: rows of each range per file (lines
    including malformed ones, which `malformed_lines` lists)."""
    layout = getattr(source, "layout", None)
    ranges = {"train": (rr.train_start, rr.train_end), "valid": (rr.valid_start, rr.valid_end),
              "test": (rr.eval_start, rr.eval_end)}
    if layout is None:
        name = getattr(source, "path", "") or type(source).__name__
        out: dict[str, Any] = {k: [{"file": name, "rows": b - a, "first_row": a}] if b > a else []
                               for k, (a, b) in ranges.items()}
        d = cfg.data
        wanted_train, wanted_eval = d.train_rows, d.eval_rows
        fits = d.eval_start >= 0 or wanted_train + wanted_eval <= source.num_rows
        out["test_from"] = ("the rows after the training rows" if d.eval_start < 0 else f"rows from {d.eval_start}")
        if not fits:
            out["test_from"] = (f"the last {rr.eval_end - rr.eval_start} of {source.num_rows} rows: the source is "
                                f"smaller than data.train_rows + data.eval_rows = {wanted_train + wanted_eval}")
        return out
    out = {k: [] for k in ranges}
    for _split, path, first, rows in layout.files:
        for k, (a, b) in ranges.items():
            n = _overlap(a, b, first, first + rows)
            if n:
                out[k].append({"file": path, "rows": n, "first_row": max(a, first) - first})
    out["test_from"] = layout.test_from
    out["shuffle"] = bool(cfg.data.shuffle)
    return out
