"""`data.shuffle`: a fresh seeded block order each epoch, the same in every mode; the work
queue's file-aligned tasks; the local reader ahead of the step (`data.prefetch`, `data.reader`)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import psrec
from collective.config import CollectiveConfig
from collective.plan import plan_collective
from collective.runner import InProcessJob
from psrec.config import load_config
from psrec.core import checkpoint
from psrec.core.flat import flat_params
from psrec.core.local import LocalJob, build_local
from psrec.data.base import Batch, DataSource
from psrec.data.errors import DataError
from psrec.data.factory import make_source
from psrec.data.prefetch import Prefetcher, PrefetchTimeout
from psrec.data.shuffle import RowOrder
from psrec.data.synthetic import SyntheticSource
from workqueue.config import WorkQueueConfig
from workqueue.queue import WorkQueueCore

sys.path.insert(0, str(Path(__file__).parent))
from test_checkpoint import SMALL, _assert_same_model  # noqa: E402
from test_collective import assert_matches_local  # noqa: E402

K, B = 3, 64
PLAIN = ["synthetic.num_fields=6", "synthetic.num_dense=2", "embedding.dim=4", "model.name=deepfm",
         "model.params.hidden=[8]", "embedding.optimizer.name=sgd", "embedding.optimizer.lr=0.5",
         "embedding.initializer.scale=0.1", "train.optimizer=sgd", "train.lr=0.1", "train.progress=false",
         "data.eval_rows=100"]
SHUFFLED = ["data.shuffle=true", "data.shuffle_block=16", "data.epochs=2"]


def _rows(segments) -> list[int]:
    return [r for a, b in segments for r in range(a, b)]


def test_each_epoch_has_its_own_order_the_seed_repeats_it_and_every_row_is_read_once():
    order = RowOrder(100, 10_100, (7,), block=64, window=4)
    train = list(range(100, 10_100))
    epochs = [_rows(order.segments(e, 100, 10_100)) for e in range(3)]
    for rows in epochs:
        assert sorted(rows) == train  # every row exactly once per epoch
        assert rows != train  # shuffled
    assert epochs[0] != epochs[1] != epochs[2] != epochs[0]  # a fresh order each epoch
    assert _rows(RowOrder(100, 10_100, (7,), 64, 4).segments(1, 100, 10_100)) == epochs[1]  # same seed, same order
    assert _rows(RowOrder(100, 10_100, (8,), 64, 4).segments(1, 100, 10_100)) != epochs[1]
    # any split of the logical range reads the same rows; rows outside [start, end) as they are
    pieces = [r for s in range(0, 10_200, 333) for r in _rows(order.segments(1, s, min(s + 333, 10_200)))]
    assert pieces == list(range(100)) + epochs[1] + list(range(10_100, 10_200))
    # blocks are read whole, in file order: a batch of 1024 rows is about 1024 / 64 reads
    assert len(order.segments(0, 100, 1124)) <= 1024 // 64 + 1
    assert RowOrder(0, 100, None).segments(3, 0, 100) == [(0, 100)]  # off: file order


class _Recording(DataSource):
    """A synthetic source that logs the row ranges read from it."""

    def __init__(self, inner: DataSource) -> None:
        self.inner, self.schema, self.log = inner, inner.schema, []

    @property
    def num_rows(self) -> int:
        return self.inner.num_rows

    def read(self, start: int, end: int) -> Batch:
        self.log.append((start, end))
        return self.inner.read(start, end)

    def describe(self):
        return self.inner.describe()  # a reader process reads the plain source (and logs nothing)


def _local_epochs(extra=(), rows=K * B * 2):
    """(rows read in each epoch, trained dense parameters) of a local LR job with batch B."""
    lr = [o for o in PLAIN if not o.startswith("model.")] + ["model.name=lr"]  # the cheapest model reads the same
    cfg = load_config(None, lr + SHUFFLED + list(extra) + [f"data.batch_size={B}", f"data.train_rows={rows}"])
    src = _Recording(SyntheticSource(cfg.synthetic))
    setup = build_local(cfg, src)
    src.log.clear()
    job = LocalJob(cfg, setup)
    job.train(None, None)
    read = _rows(src.log)
    return [read[e * rows:(e + 1) * rows] for e in range(cfg.data.epochs)], flat_params(setup.model)


def test_local_training_reads_every_row_once_per_epoch_in_a_fresh_seeded_order():
    (e0, e1), dense = _local_epochs()
    assert sorted(e0) == sorted(e1) == list(range(K * B * 2))
    assert e0 != e1 and e0 != sorted(e0)
    (again0, again1), again = _local_epochs()
    assert (again0, again1) == (e0, e1)
    np.testing.assert_array_equal(again, dense)  # the reader thread changes nothing
    (plain0, plain1), _ = _local_epochs(["data.shuffle=false"])
    assert plain0 == plain1 == list(range(K * B * 2))
    (seed0, _), _ = _local_epochs(["train.seed=5"])
    assert seed0 != e0


@pytest.mark.parametrize("reader", ["thread", "process"])
def test_a_reader_ahead_trains_the_same_parameters_as_reading_inline(reader):
    _, ahead = _local_epochs([f"data.reader={reader}", "data.prefetch=3"])
    _, inline = _local_epochs(["data.prefetch=0"])
    np.testing.assert_array_equal(ahead, inline)


def test_the_reader_process_reports_its_malformed_lines_and_its_errors(tmp_path):
    """A CSV with 20 malformed lines past the rows a source probes at open: trained through a
    reader process, the run lists them (the driver's copy of the source never read those
    rows); in strict mode the child's DataError reaches the trainer as one clear error."""
    from psrec.data.fileset import PROBE_ROWS

    good = ["clicked,user,price"] + [f"{i % 2},u{i % 7},{i / 10}" for i in range(PROBE_ROWS + 500)]
    first = PROBE_ROWS + 200  # data row of the first bad line; its line number is first + 2
    bad = good[:first + 1] + [line.replace(",", ";") for line in good[first + 1:first + 21]] + good[first + 21:]
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(bad) + "\n")
    over = ["train.progress=false", f"data.train_path={path}", "data.label=clicked", "model.name=lr",
            'data.features=[{name="user"}, {name="price", type="numeric"}]', "data.batch_size=100",
            "data.reader=process", f"run.dir={tmp_path / 'runs'}", "run.save_model=false"]
    res = psrec.train(load_config(None, over), "local")
    assert [m["line_no"] for m in res.malformed_lines] == list(range(first + 2, first + 22))
    with pytest.raises(DataError, match=f"line {first + 2}"):
        psrec.train(load_config(None, over + ["data.strict=true"]), "local")


def _local_reference(workers: int):
    cfg = load_config(None, PLAIN + SHUFFLED + [f"data.batch_size={B * workers}", f"data.train_rows={K * B * workers}"])
    setup = build_local(cfg)
    job = LocalJob(cfg, setup)
    assert job.rounds == 2 * K
    job.train(None, None)
    return setup


@pytest.mark.parametrize("workers, dense", [(2, "ps"), (3, "allreduce")])
def test_shuffled_sync_ps_matches_local_over_two_epochs(workers, dense):
    from psrec.ps.runner import InProcessPSJob, plan_ps

    setup = _local_reference(workers)
    cfg = load_config(None, PLAIN + SHUFFLED + [f"data.batch_size={B}", f"data.train_rows={K * B * workers}",
                                                "ps.transport=inprocess", "ps.sync=true", f"ps.workers={workers}",
                                                "ps.num_ps=2", f"ps.dense={dense}"])
    plan = plan_ps(cfg)
    assert plan.rounds == 2 * K and plan.order is not None
    job = InProcessPSJob(plan, plan.source.build())
    job.train(None, None)
    for t in setup.store.table_names:
        snap = setup.store.variable(t).snapshot()
        want = dict(zip(snap.keys.tolist(), snap.values))
        got = {}
        for e in job.transport.endpoints:
            keys, values = e.table_values(t)
            got.update(zip(keys.tolist(), values))
        assert set(got) == set(want)
        keys = sorted(want)
        torch.testing.assert_close(torch.from_numpy(np.stack([got[k] for k in keys])),
                                   torch.from_numpy(np.stack([want[k] for k in keys])), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.from_numpy(job.dense()), torch.from_numpy(flat_params(setup.model)),
                               rtol=1e-5, atol=1e-6)


def test_shuffled_collective_matches_local_over_two_epochs():
    setup = _local_reference(2)
    cfg = load_config(None, PLAIN + SHUFFLED + [f"data.batch_size={B}", f"data.train_rows={K * B * 2}"])
    job = InProcessJob(plan_collective(cfg, CollectiveConfig(workers=2, bucket_bytes=64, transport="inprocess",
                                                             metrics_port=-1)))
    try:
        reports = job.train()
        assert all(len(r.steps) == 2 * K for r in reports)
        assert_matches_local(setup, job.table_values, job.dense_all)
    finally:
        job.close()


def test_queue_tasks_break_where_files_start_and_survive_a_checkpoint():
    q = WorkQueueCore(WorkQueueConfig(task_rows=64, shuffle=False), 2, 0, 450, splits=(150, 280))
    tasks = []
    while (t := q.take(0)) is not None:
        q.done(0, t)
        tasks.append(t)
    assert [(t.start, t.end, t.part) for t in tasks] == [
        (0, 64, 0), (64, 128, 0), (128, 150, 0), (150, 214, 1), (214, 278, 1), (278, 280, 1),
        (280, 344, 2), (344, 408, 2), (408, 450, 2)]
    assert q.accounting()["exactly_once"]
    fresh = WorkQueueCore(WorkQueueConfig(task_rows=64), 2, 0, 450, splits=(150, 280))
    back = WorkQueueCore.restore(fresh.checkpoint())
    assert back.tasks_per_epoch == 9 and back.splits == (150, 280)


def _three_csvs(tmp_path: Path, sizes=(150, 130, 170)) -> str:
    rng = np.random.default_rng(0)
    for f, n in enumerate(sizes):
        lines = ["clicked,user,price"] + [f"{int(rng.random() < 0.3)},u{f}_{i},{rng.random():.3f}" for i in range(n)]
        (tmp_path / f"part-{f}.csv").write_text("\n".join(lines) + "\n")
    return str(tmp_path / "part-*.csv")


@pytest.mark.parametrize("shuffle", [False, True])
def test_the_queue_hands_each_worker_one_files_slice_of_a_csv_glob(tmp_path, shuffle):
    """Collective ranks on a 3-file glob (files of 150, 130, 170 rows; tasks of 64, batches of
    32): every read stays inside one file, and every train row trains once per epoch."""
    cfg = load_config(None, ["train.progress=false", f"data.train_path={_three_csvs(tmp_path)}", "data.label=clicked",
                             'data.features=[{name="user"}, {name="price", type="numeric"}]', "model.name=lr",
                             "data.batch_size=32", "data.test_share=0.2", "workqueue.task_rows=64",
                             "workqueue.epochs=2", f"data.shuffle={str(shuffle).lower()}",
                             "data.shuffle_block=8"])
    source = make_source(cfg)
    starts = [first for _, _, first, _ in source.layout.files]
    fit = source.layout.train[1]
    reads = []  # every row range read from the source, a shuffled batch's blocks one by one
    inner, inner_segments = source.read, source.read_segments
    source.read = lambda a, b: (reads.append((a, b)), inner(a, b))[1]
    source.read_segments = lambda segs: (reads.extend(segs), inner_segments(segs))[1]
    plan = plan_collective(cfg, CollectiveConfig(workers=2, data="queue", transport="inprocess", metrics_port=-1),
                           source)
    assert plan.queue_rows == (0, fit) and plan.queue_splits == tuple(s for s in starts if 0 < s < fit)
    job = InProcessJob(plan, source)
    try:
        reads.clear()
        reports = job.train()
    finally:
        job.close()
    file_of = (lambda r: int(np.searchsorted(starts, r, side="right")) - 1)
    assert reads and all(file_of(a) == file_of(b - 1) for a, b in reads if b > a)
    trained = sorted(r for a, b in reads for r in range(a, b))
    assert trained == sorted(list(range(fit)) * 2)  # each train row once in each of the 2 epochs
    spans = [(s.task, s.span) for rep in reports for s in rep.steps if s.task is not None]
    assert all(file_of(a) == file_of(b - 1) for _, (a, b) in spans)


def test_a_reader_error_reaches_the_step_and_a_stuck_reader_times_out():
    def read(i):
        if i == 2:
            raise DataError("bad.csv: line 3: boom")
        return i

    with pytest.raises(DataError, match="line 3"), Prefetcher(read, [(i,) for i in range(5)], depth=1) as p:
        assert [x for _, x, _ in p][:2] == [0, 1]
    import threading

    gate = threading.Event()
    with pytest.raises(PrefetchTimeout), Prefetcher(lambda: gate.wait(5), [()], timeout_s=0.2) as p:
        list(p)
    gate.set()


@pytest.mark.parametrize("mode, extra", [
    ("local", []),
    ("ps", ["embedding.optimizer.name=sgd", "embedding.optimizer.lr=0.5", "train.optimizer=sgd", "train.lr=0.1",
            "ps.transport=inprocess", "ps.sync=true", "ps.workers=2", "ps.num_ps=2"]),
])
def test_a_shuffled_run_resumed_in_its_second_epoch_equals_the_uninterrupted_run(mode, extra, tmp_path):
    base = SMALL + extra + SHUFFLED + ["data.train_rows=512", "data.shuffle_block=32", f"run.dir={tmp_path}"]
    whole = psrec.train(load_config(None, base + ["run.name=whole"]), mode)
    cfg = load_config(None, base + ["run.name=cut", "run.checkpoint_every_steps=3", "run.keep_checkpoints=20"])
    cut = psrec.train(cfg, mode)
    per_epoch = 512 // 64 if mode == "local" else 512 // 128
    later = [c for c in checkpoint.list_checkpoints(Path(cut.path) / "checkpoints")
             if per_epoch < checkpoint.verify(c)["step"] < 2 * per_epoch]
    again = (psrec.core.local.run_local(cfg, cut.path, resume_from=later[0]) if mode == "local"
             else psrec.ps.runner.run_ps(cfg, cut.path, resume_from=later[0]))
    assert again["checkpoints"]["resumed_from_step"] > per_epoch  # resumed inside epoch 2
    _assert_same_model(whole.path, again.path)
    assert again.auc == pytest.approx(whole.auc, abs=1e-9)


@pytest.mark.parametrize("fmt", ["csv", "parquet", "libsvm"])
def test_reading_a_shuffled_batchs_blocks_in_one_pass_equals_reading_them_one_by_one(fmt, tmp_path):
    """`read_segments` (one parse for a batch's blocks) gives the rows and the malformed-line
    numbers that separate reads give, across two files and Parquet row groups."""
    from test_data_spec import SPEC, SVM_SPEC, _rows, _write_all

    from psrec.data.base import concat_batches
    from psrec.data.fileset import FileSetSource

    opener = {"csv": "psrec.data.tabular:FeatureCsvSource", "parquet": "psrec.data.parquet:ParquetSource",
              "libsvm": "psrec.data.libsvm:LibsvmSource"}[fmt]
    opts = {"features": SVM_SPEC if fmt == "libsvm" else SPEC, "label": "clicked"}
    paths = []
    for k in range(2):
        d = tmp_path / str(k)
        d.mkdir()
        p = _write_all(d, _rows(300, seed=k))[fmt]
        if fmt != "parquet":  # two malformed lines in each text file
            lines = p.read_text().splitlines(keepends=True)
            for i in (40, 211):
                lines[i] = "oops\n"
            p.write_text("".join(lines))
        paths.append(str(p))
    segs = RowOrder(0, 600, (3,), block=32, window=4).segments(0, 0, 600)
    one, many = (FileSetSource(paths, opener=opener, options=opts, test_share=0.5) for _ in range(2))
    a = one.read_segments(segs)
    b = concat_batches([many.read(x, y) for x, y in segs])
    for name in ("keys", "dense", "labels"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for ra, rb in zip(a.multi, b.multi):
        np.testing.assert_array_equal(ra.values, rb.values)
        np.testing.assert_array_equal(ra.offsets, rb.offsets)
    assert [(m.file, m.line_no) for m in one.malformed_lines()] == [(m.file, m.line_no) for m in many.malformed_lines()]
    assert len(one.malformed_lines()) == (0 if fmt == "parquet" else 4)
