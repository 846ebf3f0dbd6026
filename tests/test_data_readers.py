"""The Criteo, Avazu and MovieLens readers on the real samples in shared/data/."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from psrec.data._csv import hash_ids, missing_key
from psrec.data.avazu import AvazuSource
from psrec.data.base import concat_batches
from psrec.data.criteo import CriteoSource, log_transform
from psrec.data.csv_index import LineIndex
from psrec.data.errors import DataError
from psrec.data.keys import FIELD_SHIFT, ID_MASK, hash_strings, key_field, make_keys
from psrec.data.movielens import MovieLensSource

# CI clones the repository into its own folder with shared/ beside it.
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CRITEO, AVAZU, MOVIELENS = (DATA / "criteo_sample.txt", DATA / "avazu_sample.txt",
                            DATA / "movielens_sample.txt")

pytestmark = pytest.mark.skipif(
    not CRITEO.exists(), reason=f"sample data not found at {DATA} (shared/ beside the repo)")

READERS = [(CriteoSource, CRITEO, 200), (AvazuSource, AVAZU, 100),
           (MovieLensSource, MOVIELENS, 200)]


def _csv_rows(path: Path) -> list[list[str]]:
    """The sample's data rows by an independent parser (the csv module), header dropped."""
    with open(path, newline="") as f:
        return list(csv.reader(f))[1:]


def _assert_same(a, b) -> None:
    np.testing.assert_array_equal(a.keys, b.keys)
    np.testing.assert_array_equal(a.dense, b.dense)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.start == b.start and len(a.multi) == len(b.multi)
    for ra, rb in zip(a.multi, b.multi):
        np.testing.assert_array_equal(ra.values, rb.values)
        np.testing.assert_array_equal(ra.offsets, rb.offsets)


def _ids(strings: list[str]) -> np.ndarray:
    return hash_strings(strings) & ID_MASK


# -- whole files ---------------------------------------------------------------------------
def test_criteo_whole_file():
    src = CriteoSource(CRITEO)
    assert (src.num_rows, src.delimiter, src.header.split(",")[:2]) == (200, ",", ["label", "I1"])
    b = src.read(0, src.num_rows)
    assert b.keys.shape == (200, 26) and b.keys.dtype == np.int64
    assert b.dense.shape == (200, 13) and b.dense.dtype == np.float32
    assert b.labels.dtype == np.float32 and int(b.labels.sum()) == 49
    assert src.malformed_count == 0 and src.malformed == []


def test_criteo_dense_transform_and_missing():
    # Row 0: I1 empty, I2 = 3, I3 = 260.0, I5 = 17668.0, I12 = 0.0.
    b = CriteoSource(CRITEO).read(0, 1)
    np.testing.assert_allclose(b.dense[0, :5], [0.0, np.log1p(3), np.log1p(260), 0.0,
                                               np.log1p(17668)], rtol=1e-6)
    np.testing.assert_allclose(log_transform(np.array([-2.0, 0.0, 2.0])),
                               [-np.log1p(2), 0.0, np.log1p(2)])


def test_avazu_whole_file():
    src = AvazuSource(AVAZU)
    b = src.read(0, src.num_rows)
    assert src.num_rows == 100 and b.keys.shape == (100, 23) and b.dense.shape == (100, 0)
    assert int(b.labels.sum()) == 20
    # Row 0: hour 14102100 = 2014-10-21 (a Tuesday) 00h; C1 = 1005; `id` is not a feature.
    np.testing.assert_array_equal(b.keys[0, :3], [make_keys(0, _ids(["0"]))[0],
                                                  make_keys(1, _ids(["Tue"]))[0],
                                                  make_keys(2, _ids(["1005"]))[0]])
    assert [f.name for f in src.schema.fields[:3]] == ["hour_of_day", "weekday", "C1"]


def test_movielens_whole_file():
    src = MovieLensSource(MOVIELENS)
    b = src.read(0, src.num_rows)
    rows = _csv_rows(MOVIELENS)
    assert src.num_rows == len(rows) == 200 and b.keys.shape == (200, 6)
    np.testing.assert_array_equal(b.labels, [float(int(r[2]) >= 4) for r in rows])
    assert src.schema.multi_fields == (6,) and b.dense.shape == (200, 0)
    # Quoted titles with commas ("Apartment, The (1960)") did not shift the columns.
    np.testing.assert_array_equal(b.keys[:, 5], make_keys(5, _ids([r[9] for r in rows])))


def test_movielens_genres_offsets_hand_checked():
    # Rows 4-8: Comedy|Drama, Comedy, Children's|Comedy, Drama, Drama (row 4's title is
    # quoted and holds a comma).
    g = MovieLensSource(MOVIELENS).read(4, 9).multi[0]
    assert g.offsets.tolist() == [0, 2, 3, 5, 6, 7]
    np.testing.assert_array_equal(
        g.values, make_keys(6, _ids(["Comedy", "Drama", "Comedy", "Children's", "Comedy",
                                     "Drama", "Drama"])))


# -- row ranges ----------------------------------------------------------------------------
@pytest.mark.parametrize("cls, path, n", READERS, ids=lambda x: getattr(x, "__name__", None))
def test_same_range_twice_is_identical(cls, path, n):
    src = cls(path)
    _assert_same(src.read(13, 77), src.read(13, 77))
    _assert_same(src.read(13, 77), cls(path).read(13, 77))


@pytest.mark.parametrize("cls, path, n", READERS, ids=lambda x: getattr(x, "__name__", None))
def test_range_split_in_pieces_concatenates_to_whole(cls, path, n):
    src = cls(path)
    whole = src.read(0, n)
    cuts = [0, 1, 7, 7, 64, n - 1, n]
    pieces = [src.read(a, b) for a, b in zip(cuts, cuts[1:])]
    _assert_same(concat_batches(pieces), whole)
    _assert_same(concat_batches(list(src.batches(0, n, 32))), whole)
    empty = src.read(5, 5)
    assert len(empty) == 0 and empty.keys.shape == (0, len(src.schema.single_fields))
    with pytest.raises(IndexError):
        src.read(0, n + 1)


# -- formats -------------------------------------------------------------------------------
def test_criteo_tab_separated_no_header_gives_the_same_batches(tmp_path):
    lines = CRITEO.read_text().splitlines()[1:]
    tsv = tmp_path / "day_0"
    tsv.write_text("\n".join(line.replace(",", "\t") for line in lines))  # no final newline
    src = CriteoSource(tsv)
    assert (src.delimiter, src.header, src.num_rows) == ("\t", None, 200)
    _assert_same(src.read(0, 200), CriteoSource(CRITEO).read(0, 200))
    # The same with both options given rather than detected.
    _assert_same(CriteoSource(tsv, delimiter="\t", header=False).read(50, 60),
                 CriteoSource(CRITEO).read(50, 60))


def test_crlf_and_header_option(tmp_path):
    crlf = tmp_path / "crlf.csv"
    crlf.write_bytes(AVAZU.read_bytes().replace(b"\n", b"\r\n"))
    _assert_same(AvazuSource(crlf).read(0, 100), AvazuSource(AVAZU).read(0, 100))
    with pytest.raises(DataError, match="header has 24 columns, expected 40"):
        CriteoSource(AVAZU)


def test_line_index(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes(b"h\r\nab\n\ncd")  # header, a line, a blank line, no final newline
    idx = LineIndex(p, header=True, chunk_bytes=3)  # chunks split lines anywhere
    assert idx.header == "h" and idx.first_line_no == 2
    assert idx.offsets.tolist() == [3, 6, 7, 9] and idx.offsets.dtype == np.int64
    assert idx.read_lines(0, 3) == ["ab", "", "cd"] and idx.read_lines(1, 2) == [""]
    empty = tmp_path / "e.txt"
    empty.write_bytes(b"")
    assert LineIndex(empty, header=lambda line: True).num_lines == 0


# -- malformed lines -----------------------------------------------------------------------
def _bad_criteo(tmp_path) -> tuple[Path, list[str]]:
    lines = CRITEO.read_text().splitlines()[:9]  # header + rows 0-7: file lines 1-9
    good = lines[1:]
    bad = list(lines)
    bad[2] = ",".join(good[1].split(",")[:30])               # line 3: too few columns
    f = good[3].split(",")
    f[2] = "abc"
    bad[4] = ",".join(f)                                     # line 5: I2 not a number
    bad[6] = "7" + good[5][1:]                               # line 7: label 7
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(bad) + "\n")
    return path, bad


def test_malformed_lines_are_counted_reported_and_skipped(tmp_path):
    path, bad = _bad_criteo(tmp_path)
    src = CriteoSource(path)
    assert src.num_rows == 8  # the line count: malformed lines are rows until read
    b = src.read(0, 8)
    assert len(b) == 5 and src.malformed_count == 3
    assert [(m.line_no, m.reason) for m in src.malformed] == [
        (3, "expected 40 columns, got 30"),
        (5, "I2 is not a finite number: 'abc'"),
        (7, "label must be 0 or 1, got '7'"),
    ]
    assert src.malformed[2].raw == bad[6][:120] + "..."  # the raw line, truncated
    # Skipped, not substituted: the good rows are exactly the sample's rows 0, 2, 4, 6, 7.
    ref = CriteoSource(CRITEO).read(0, 8)
    np.testing.assert_array_equal(b.keys, ref.keys[[0, 2, 4, 6, 7]])
    # Each line recorded once, however often and in whatever pieces its range is read.
    src.read(0, 8)
    _assert_same(concat_batches([src.read(0, 3), src.read(3, 8)]), b)
    assert src.malformed_count == 3
    assert [m.line_no for m in CriteoSource(path).scan_malformed(chunk_rows=3)] == [3, 5, 7]


def test_malformed_first_line_is_not_taken_for_a_header(tmp_path):
    path, bad = _bad_criteo(tmp_path)
    no_header = tmp_path / "nh.csv"
    no_header.write_text("\n".join(bad[6:]) + "\n")  # starts with the label-7 line
    src = CriteoSource(no_header)
    assert src.header is None and src.num_rows == 3
    assert len(src.read(0, 3)) == 2 and src.malformed[0].line_no == 1


def test_strict_raises_naming_the_line(tmp_path):
    path, _ = _bad_criteo(tmp_path)
    src = CriteoSource(path, strict=True)
    assert len(src.read(0, 1)) == 1  # a clean range reads fine
    with pytest.raises(DataError, match=r"line 3: expected 40 columns, got 30"):
        src.read(0, 8)
    with pytest.raises(DataError, match=r"line 7: label must be 0 or 1, got '7'"):
        src.read(5, 8)


def test_movielens_and_avazu_malformed(tmp_path):
    ml = MOVIELENS.read_text().splitlines()[:6]
    ml[2] = ml[2].replace(",3,966536874,", ",x,966536874,")       # line 3: rating
    ml[3] = ml[3].replace('(1995)"', "(1995)")                    # line 4: unclosed quote
    p = tmp_path / "ml.csv"
    p.write_text("\n".join(ml) + "\n")
    src = MovieLensSource(p)
    b = src.read(0, 5)
    # The unclosed quote did not swallow line 5: rows 0, 3, 4 survive.
    assert len(b) == 3 and b.multi[0].offsets.tolist() == [0, 2, 4, 6]
    ref = MovieLensSource(MOVIELENS)
    _assert_same(b, concat_batches([ref.read(a, a + 1) for a in (0, 3, 4)]))
    assert [(m.line_no, m.reason.split(":")[0]) for m in src.malformed] == [
        (3, "rating is not a finite number"), (4, "bad quoting")]
    av = AVAZU.read_text().splitlines()[:3]
    av[2] = av[2].replace(",14102100,", ",14023100,")  # 31 February
    p = tmp_path / "av.csv"
    p.write_text("\n".join(av) + "\n")
    src = AvazuSource(p)
    assert len(src.read(0, 2)) == 1
    assert src.malformed[0].line_no == 3 and "YYMMDDHH" in src.malformed[0].reason


# -- keys ----------------------------------------------------------------------------------
@pytest.mark.parametrize("cls, path, n", READERS, ids=lambda x: getattr(x, "__name__", None))
def test_keys_carry_their_field_index(cls, path, n):
    src = cls(path)
    b = src.read(0, n)
    single = np.array(src.schema.single_fields)
    np.testing.assert_array_equal(key_field(b.keys), np.broadcast_to(single, b.keys.shape))
    assert (b.keys >= 0).all()
    for field_index, r in zip(src.schema.multi_fields, b.multi):
        assert (key_field(r.values) == field_index).all()


def test_missing_values_get_the_per_field_missing_key():
    rows = _csv_rows(CRITEO)
    keys = CriteoSource(CRITEO).read(0, 200).keys
    empty = np.array([[v == "" for v in r[14:40]] for r in rows])  # (200, 26)
    assert empty.any() and not empty.all()
    missing = np.array([missing_key(j) for j in range(26)])
    assert len(set(missing.tolist())) == 26 and (missing >> FIELD_SHIFT == np.arange(26)).all()
    np.testing.assert_array_equal(keys == missing[None, :], empty)
    # Row 0: C19, C20 empty, C21 = 0429f84b.
    assert keys[0, 18] == missing[18] and keys[0, 19] == missing[19]
    assert keys[0, 20] == make_keys(20, _ids(["0429f84b"]))[0]


def test_hash_ids_matches_keys_hash_strings():
    s = ["05db9164", "", "a", "Comedy", "é"]
    expect = hash_strings(s) & ID_MASK
    expect[1] = 0  # '' is the missing id
    np.testing.assert_array_equal(hash_ids(s), expect)
