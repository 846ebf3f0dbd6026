"""`psrec data inspect PATH`: what a data file holds (rows, columns, guessed types, cardinality,
missing share, label rate) and a `[[data.features]]` block to paste into a run's TOML."""
from __future__ import annotations

import argparse
import os
from collections import Counter

__all__ = ["register", "inspect_file"]

_LABEL_NAMES = ("label", "click", "clicked", "target", "y", "is_click", "conversion")
# An integer column with at most this many distinct values in the sample is an id, not a magnitude.
_MAX_INT_CATEGORIES = 1000


def register(sub) -> None:
    p = sub.add_parser("data", help="inspect a data file and suggest its [[data.features]]")
    dsub = p.add_subparsers(dest="data_command", required=True)
    q = dsub.add_parser("inspect", help="rows, columns, guessed types, cardinality, missing share, label rate")
    q.add_argument("path", help="a csv, tsv, parquet, libsvm or libFM file")
    q.add_argument("--format", choices=["csv", "tsv", "parquet", "libsvm", "libfm"],
                   help="the file's format (default: from its name and first bytes)")
    q.add_argument("--label", help="the label column (default: guessed: label, click, ... or the first 0/1 column)")
    q.add_argument("--rows", type=int, default=100_000, help="rows sampled for the statistics (default 100000)")
    q.set_defaults(func=run)


def _guess_format(path: str) -> str:
    with open(path, "rb") as f:
        head = f.read(4096)
    if head[:4] == b"PAR1":
        return "parquet"
    first = head.split(b"\n", 1)[0].decode("utf-8", "replace")
    toks = first.split()
    if len(toks) > 1 and all(t.count(":") == 2 for t in toks[1:]):
        return "libfm"
    if len(toks) > 1 and all(t.count(":") == 1 for t in toks[1:]):
        return "libsvm"
    return "tsv" if "\t" in first else "csv"


def _columns(path: str, fmt: str, rows: int) -> tuple[dict[str, list], int]:
    """{column: sampled values ('' or None = missing)}, total rows in the file."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        parts, n = [], 0
        for g in range(pf.metadata.num_row_groups):
            if n >= rows:
                break
            t = pf.read_row_group(g)
            parts.append(t)
            n += t.num_rows
        import pyarrow as pa

        t = pa.concat_tables(parts).slice(0, rows)
        return {c: t.column(c).to_pylist() for c in t.column_names}, pf.metadata.num_rows
    import csv

    d = "\t" if fmt == "tsv" else ","
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f, delimiter=d)
        header = next(reader)
        cols: dict[str, list] = {h: [] for h in header}
        total = 0
        for r in reader:
            total += 1
            if total <= rows and len(r) == len(header):
                for h, v in zip(header, r):
                    cols[h].append(v)
    return cols, total


def _kind(values: list) -> tuple[str, int, float]:
    """(guessed type, distinct values, missing share) of a sampled column."""
    present = [v for v in values if v not in ("", None)]
    missing = 1 - len(present) / len(values) if values else 0.0
    distinct = len(set(map(str, present)))
    if present and all(isinstance(v, list) for v in present):
        return "sequence", len({x for v in present for x in v}), missing
    nums, ints = 0, 0
    for v in present[:20_000]:
        try:
            x = float(v)
        except (TypeError, ValueError):
            continue
        nums += 1
        ints += float(x).is_integer()
    sample = min(len(present), 20_000)
    if sample and nums == sample:
        if ints == sample and distinct <= _MAX_INT_CATEGORIES:
            return "categorical", distinct, missing
        return "numeric", distinct, missing
    if present and sum("|" in str(v) for v in present[:20_000]) > sample / 2:
        return "sequence", distinct, missing
    return "categorical", distinct, missing


def inspect_file(path: str, fmt: str | None = None, label: str | None = None, rows: int = 100_000) -> str:
    """The report `psrec data inspect` prints (a DataError for a file it cannot read)."""
    from psrec.data.errors import DataError
    from psrec.data.tabular import check_file

    fmt = fmt or (_guess_format(path) if os.path.isfile(path) else "csv")
    check_file(path, fmt)
    if fmt in ("libsvm", "libfm"):
        return _inspect_sparse(path, fmt, rows)
    cols, total = _columns(path, fmt, rows)
    if not cols or not total:
        raise DataError(f"{path}: no data rows")
    if label is None:
        label = next((c for c in cols if c.lower() in _LABEL_NAMES), None)
        label = label or next((c for c, v in cols.items() if v and set(map(str, v)) <= {"0", "1"}), None)
    if label is not None and label not in cols:
        raise DataError(f"{path}: no column {label!r}; columns: {', '.join(cols)}")
    out = [f"{path}: {fmt}, {total} rows, {len(cols)} columns (statistics over {min(total, rows)} rows)", "",
           f"{'column':<24} {'type':<12} {'distinct':>9} {'missing':>8}"]
    kinds = {}
    for c, v in cols.items():
        kinds[c] = _kind(v)
        t, k, m = kinds[c]
        out.append(f"{c:<24} {('label' if c == label else t):<12} {k:>9} {m:>8.1%}")
    if label is not None:
        lab = Counter(map(str, cols[label]))
        ones = lab.get("1", 0) + lab.get("1.0", 0) + lab.get("True", 0)
        good = ones + lab.get("0", 0) + lab.get("0.0", 0) + lab.get("False", 0)
        out.append("")
        out.append(f"label {label!r}: rate {ones / max(good, 1):.4f} over {good} rows"
                   + (f"; {sum(lab.values()) - good} values are not 0/1 (set data.label_threshold?)"
                      if good < sum(lab.values()) else ""))
    out += ["", "# paste into the run's TOML", "[data]", f'format = "{fmt}"', f'train_path = "{path}"']
    if label is not None:
        out.append(f'label = "{label}"')
    for c, (t, k, _) in kinds.items():
        if c == label:
            continue
        out += ["", "[[data.features]]", f'name = "{c}"', f'type = "{t}"']
        if t == "categorical":
            out.append(f"cardinality = {k}")
        if t == "sequence":
            out.append('separator = "|"')
    return "\n".join(out)


def _inspect_sparse(path: str, fmt: str, rows: int) -> str:
    """libsvm / libFM: per field (libFM) or per index (libsvm) counts, and suggested groups."""
    per = 2 if fmt == "libsvm" else 3
    ids: dict[int, set] = {}
    values: dict[int, set] = {}
    multi: set[int] = set()
    row_sets: list[list[int]] = []
    labels: Counter = Counter()
    total = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            total += 1
            if total > rows:
                continue
            toks = line.split()
            if not toks:
                continue
            labels[toks[0]] += 1
            seen: Counter = Counter()
            for t in toks[1:]:
                p = t.split(":")
                if len(p) != per:
                    continue
                g = int(p[0]) if per == 3 else int(p[0])
                ids.setdefault(g, set()).add(p[1] if per == 3 else p[0])
                values.setdefault(g, set()).add(p[-1])
                seen[g] += 1
            multi |= {g for g, c in seen.items() if c > 1}
            row_sets.append(list(seen))
    ones = labels.get("1", 0) + labels.get("+1", 0)
    out = [f"{path}: {fmt}, {total} rows, {len(ids)} {'fields' if per == 3 else 'feature indices'} "
           f"(statistics over {min(total, rows)} rows)",
           f"label rate {ones / max(sum(labels.values()), 1):.4f}", "",
           "# paste into the run's TOML", "[data]", f'format = "{fmt}"', f'train_path = "{path}"']
    if per == 3:
        for g in sorted(ids):
            binary = values[g] <= {"1", "1.0"}
            t = "sequence" if g in multi else ("categorical" if binary or len(ids[g]) > 1 else "numeric")
            out += ["", "[[data.features]]", f'name = "field{g}"', f'type = "{t}"', f"index = {g}"]
        return "\n".join(out)
    # libsvm: a non-binary index is a numeric feature; a run of binary indices one categorical group.
    groups, run = [], []
    for i in sorted(ids):
        binary = values[i] <= {"1", "1.0"}
        if binary and run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            groups.append(("categorical", run))
            run = []
        if binary:
            run = [i]
        else:
            groups.append(("numeric", [i]))
    if run:
        groups.append(("categorical", run))
    out.insert(4, "# libsvm has no fields: a run of consecutive 0/1 indices is one group here; split it "
                  "where your features end")
    for t, idx in groups:
        lo, hi = idx[0], idx[-1]
        several = t == "categorical" and any(sum(lo <= i <= hi for i in r) > 1 for r in row_sets)
        t = "sequence" if several else t
        out += ["", "[[data.features]]", f'name = "f{idx[0]}"', f'type = "{t}"', f"index = {idx[0]}",
                f"size = {len(idx)}"]
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    print(inspect_file(args.path, args.format, args.label, args.rows))
    return 0
