"""The one training core: every mode through one step and one run skeleton, on the source it
was given, for `data.epochs` passes, with one throughput rule and one result type."""
import math
import sys

import numpy as np
import pytest

import psrec
from psrec.comm.collectives import ring_allreduce_traffic
from psrec.commands.compare import summarize
from psrec.core.progress import progress_bar
from psrec.core.report import summarize_steps
from psrec.core.result import SCHEMA_VERSION, ResultError, RunResult, aggregate_workers
from psrec.core.step import PHASES, StepRecord
from psrec.data.base import Batch, DataSource, FieldSpec, Schema
from psrec.data.keys import make_keys
from psrec.ps.runner import InProcessPSJob, plan_ps

K, B, W = 4, 64, 2
PLAIN_SGD = ["embedding.dim=4", "model.name=deepfm", "model.params.hidden=[8]", "embedding.optimizer.name=sgd",
             "embedding.optimizer.lr=0.5", "embedding.initializer.scale=0.1", "train.optimizer=sgd", "train.lr=0.1",
             "train.progress=false", "ps.metrics_port=-1", "collective.metrics_port=-1", "data.eval_rows=256"]


class TenFields(DataSource):
    """A user's own source, not one psrec ships: 10 categorical fields and one numeric column,
    every row a hash of its index (any range reads the same rows however it is split)."""

    def __init__(self, rows: int = 2048, seed: int = 7) -> None:
        self.rows, self.seed = rows, seed
        self.schema = Schema(tuple(FieldSpec(f"f{i}", 40) for i in range(10)), ("price",))

    @property
    def num_rows(self) -> int:
        return self.rows

    def read(self, start: int, end: int) -> Batch:
        self._check_range(start, end)
        i = np.arange(start, end, dtype=np.uint64)[:, None]
        h = (i * np.uint64(0x9E3779B97F4A7C15) + np.arange(10, dtype=np.uint64) * np.uint64(self.seed + 1)
             ) >> np.uint64(40)
        ids = h % np.uint64(40)  # (B, 10)
        keys = np.stack([make_keys(f, ids[:, f]) for f in range(10)], axis=1)
        labels = ((ids[:, 0] + ids[:, 3]) % np.uint64(3) == 0).astype(np.float32)
        dense = (ids[:, :1] / 40.0).astype(np.float32)
        return Batch(keys, dense, labels, start=start)


def _ship_by_value():
    """Ray workers cannot import this test module: send its classes by value."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def test_a_custom_source_trains_identically_in_every_mode_on_ray(ray_session, tmp_path):
    """Sync PS on Ray (2 workers x batch B) and collective on Ray (2 ranks x batch B) equal local
    training with batch 2B after K steps of plain SGD a pass, over 2 epochs: the same held-out
    logloss to float precision. The source is the user's: the workers rebuild it from the plan."""
    _ship_by_value()
    src = TenFields()
    rows = ["data.epochs=2", f"data.train_rows={K * B * W}", f"run.dir={tmp_path}"]
    local = psrec.train(psrec.load_config(overrides=PLAIN_SGD + rows + [f"data.batch_size={B * W}"]), "local", src)
    dist = PLAIN_SGD + rows + [f"data.batch_size={B}", f"ps.workers={W}", "ps.num_ps=2", "ps.sync=true",
                               f"collective.workers={W}"]
    ps = psrec.train(psrec.load_config(overrides=dist), "ps", src)
    coll = psrec.train(psrec.load_config(overrides=dist), "collective", src)
    assert local.steps == 2 * K and ps.steps == 2 * K and coll.steps == 2 * K
    for r in (local, ps, coll):
        assert r.train_rows == 2 * K * B * W and r.eval_rows == 256, r.mode
    assert local.logloss < 0.69  # it learned something from these rows
    assert ps.logloss == pytest.approx(local.logloss, abs=1e-5)
    assert coll.logloss == pytest.approx(local.logloss, abs=1e-5)
    assert ps.auc == pytest.approx(local.auc, abs=1e-4) and coll.auc == pytest.approx(local.auc, abs=1e-4)


def _inprocess_ps(extra, source=None):
    cfg = psrec.load_config(overrides=PLAIN_SGD + ["ps.transport=inprocess", f"ps.workers={W}"] + extra)
    plan = plan_ps(cfg, source)
    job = InProcessPSJob(plan, plan.source.build() if source is None else source)
    with progress_bar(0, False) as bar:
        return plan, job, job.train(bar, None)


def test_ps_workers_train_every_row_once_per_epoch():
    plan, job, reports = _inprocess_ps(["data.epochs=3", f"data.train_rows={K * B * W}", f"data.batch_size={B}",
                                        "synthetic.num_fields=6", "synthetic.num_dense=2"])
    assert plan.per_epoch == K and plan.rounds == 3 * K
    seen = np.zeros(K * B * W, np.int64)
    for r in reports:
        for s in r.steps:
            seen[s.span[0]:s.span[1]] += 1
    np.testing.assert_array_equal(seen, 3)  # no row of the evaluation range, every training row 3 times


def test_hybrid_dense_allreduce_is_booked_in_the_traffic():
    """Hybrid mode's dense all-reduce goes over the psrec.comm seam: each worker's bytes per
    step include the ring formula's dense bytes, and its seconds are the allreduce phase."""
    plan, job, reports = _inprocess_ps(["ps.dense=allreduce", "ps.num_ps=1", f"data.train_rows={K * B * W}",
                                        f"data.batch_size={B}", "synthetic.num_fields=6", "synthetic.num_dense=2"])
    p = len(plan.dense_init)
    for r in reports:
        sent, recv, msgs = ring_allreduce_traffic(p, 4, W, r.worker)
        s = r.summary()
        assert s["bytes_by_tag"]["dense"] == K * (sent + recv)
        assert s["messages_by_tag"]["dense"] == K * msgs
        assert s["bytes_sent"] + s["bytes_received"] == sum(s["bytes_by_tag"].values())
        assert s["phases"]["allreduce"] > 0 and s["phases"]["pull"] > 0 and s["phases"]["push"] > 0


@pytest.mark.parametrize("mode, transport", [("local", "inprocess"), ("ps", "inprocess"), ("collective", "inprocess"),
                                             ("ps", "ray")])
def test_malformed_lines_are_reported_in_every_mode(mode, transport, shared_data, tmp_path, request):
    """A malformed line among the training rows is reported whoever read it: on Ray only a
    worker's own reader meets it (the driver reads the held-out rows)."""
    if transport == "ray":
        request.getfixturevalue("ray_session")
    bad = tmp_path / "criteo.txt"
    lines = (shared_data / "criteo_sample.txt").read_text().splitlines()
    bad.write_text("\n".join(lines[:50] + ["1,2,3"] + lines[50:]) + "\n")
    cfg = psrec.load_config(overrides=PLAIN_SGD + [
        "data.source=criteo", f"data.path={bad}", "data.batch_size=16", "data.train_rows=160", "data.eval_rows=40",
        f"ps.transport={transport}", "ps.workers=2", f"collective.transport={transport}", "collective.workers=2",
        f"run.dir={tmp_path / 'runs'}"])
    res = psrec.train(cfg, mode)
    assert [m["line_no"] for m in res.malformed_lines] == [51]
    assert RunResult.from_path(res.path).malformed_lines == res.malformed_lines


def _rec(compute: float, pull: float = 0.01, rows: int = 8) -> StepRecord:
    return StepRecord(0, dict.fromkeys(PHASES, 0.0) | {"compute": compute, "pull": pull}, rows)


def test_steady_state_leaves_the_warmup_out_and_reports_it_apart():
    steps = [_rec(0.5), _rec(0.2), _rec(0.03), _rec(0.03), _rec(0.05)]
    s = summarize_steps(0, steps, warmup=2)
    assert s["warmup"] == {"steps": 2, "seconds": pytest.approx(0.72), "rows": 16}
    assert s["steady_steps"] == 3 and s["step_p50"] == pytest.approx(0.04)
    assert s["samples_per_s"] == pytest.approx(24 / 0.14)
    assert s["comm_fraction"] == pytest.approx(0.03 / 0.14)
    agg = aggregate_workers([s])
    assert agg["step_mean_ms"] == pytest.approx(1e3 * 0.14 / 3)
    assert sum(agg["phases"].values()) * 1e3 == pytest.approx(agg["step_mean_ms"])
    assert agg["warmup"]["samples_per_s"] == pytest.approx(16 / 0.72)
    # fewer steps than the warm-up: one step stays steady
    assert summarize_steps(0, steps[:2], warmup=5)["steady_steps"] == 1


def test_compare_table_and_picture_read_one_statistic(tmp_path):
    """The table's step time is the stacked bar's height and its comm % the bar's comm share."""
    cfg = psrec.load_config(overrides=PLAIN_SGD + ["ps.transport=inprocess", "ps.workers=2", "data.batch_size=64",
                                                   "data.train_rows=1024", "synthetic.num_fields=6",
                                                   "synthetic.num_dense=2", f"run.dir={tmp_path}"])
    row = summarize("ps-async", psrec.train(cfg, "ps"))
    bar = row["compute_ms"] + row["comm_ms"] + row["wait_ms"]
    assert bar == pytest.approx(row["step_mean_ms"])
    assert 100 * row["comm_ms"] / bar == pytest.approx(row["comm_pct"])
    assert row["comm_pct"] > 0 and row["warmup_steps"] == 2


def test_run_result_round_trips_and_refuses_what_it_cannot_read(tmp_path):
    r = RunResult(mode="ps-sync", model="lr", path=str(tmp_path), auc=0.71, step_p50_ms=12.5,
                  phases={"pull": 0.004}, extra={"per_ps": [{"shard": 0}]})
    r.write()
    back = RunResult.from_path(tmp_path)
    assert back.auc == 0.71 and back.step_p50_ms == 12.5 and back["per_ps"] == [{"shard": 0}]
    assert back.schema_version == SCHEMA_VERSION and back.path == str(tmp_path)
    assert math.isnan(back.logloss)  # NaN is written as null and read back as NaN
    (tmp_path / "results.json").write_text('{"schema_version": 99, "mode": "local"}')
    with pytest.raises(ResultError, match="schema_version 99"):
        RunResult.from_path(tmp_path)
    with pytest.raises(ResultError, match="no such results file"):
        RunResult.from_path(tmp_path / "missing")


def test_version_flag_and_package_version(capsys):
    from psrec.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"psrec {psrec.__version__}"
    assert psrec.__version__[0].isdigit()


def test_run_result_reads_as_the_results_mapping():
    r = RunResult(mode="local", model="lr", path="x", step_p50_ms=5.0, extra={"tables": {}})
    d = dict(r)
    assert d["step_p50"] == 0.005 and d["run_dir"] == "x" and "tables" in d and len(r) == len(d)
    with pytest.raises(KeyError):
        r["no_such_key"]


def test_hybrid_wait_for_a_straggler_at_the_allreduce_is_peer_wait():
    """A hybrid worker that reaches the dense all-reduce first waits there for the slow one;
    that wait is lockstep, not communication: it moves from `allreduce` to `wait`
    (`psrec.core.lockstep`), counted from the previous all-reduce (the pulls are unsynchronised),
    and the phases still sum to the step."""
    _, _, reports = _inprocess_ps(["ps.dense=allreduce", "ps.num_ps=1", f"data.train_rows={K * B * W}",
                                   f"data.batch_size={B}", "synthetic.num_fields=6", "synthetic.num_dense=2",
                                   'stragglers.factors="1:8x"'])
    fast, slow = reports[0].steps[1:], reports[1].steps[1:]  # step 0: the straggle comes after it
    assert sum(s.peer_wait for s in fast) > 5 * sum(s.peer_wait for s in slow)
    for s in fast:
        assert s.peer_wait > 0 and s.seconds["wait"] >= s.peer_wait
        assert s.allreduce_total >= s.seconds["allreduce"] >= 0
    # the slow worker's injected time (booked after each step: met at the next all-reduce) is
    # what the fast one waited for, within the threads' noise
    extra = sum(s.straggler for s in reports[1].steps[:-1])
    assert sum(s.peer_wait for s in fast) == pytest.approx(extra, rel=0.5)
