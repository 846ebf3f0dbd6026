"""steps.jsonl, trace.json (Chrome trace events) and timeline.png of a run."""
import json

import pytest

from psrec.comm.traffic import Traffic
from psrec.config import load_config
from psrec.core.report import WorkerReport
from psrec.core.step import PHASES, StepRecord
from psrec.core.trace import EXEC_ORDER, trace_events


def rec(step, t, **sec):
    return StepRecord(step, dict.fromkeys(PHASES, 0.0) | sec, 8, Traffic(), t_start=t, loss=0.5)


def test_slices_follow_each_step_on_one_axis():
    """Golden: two workers, times in microseconds from the first step; zero phases leave no slice."""
    a = WorkerReport(0, [rec(1, 100.0, data=0.001, pull=0.002, compute=0.003)])
    b = WorkerReport(1, [rec(1, 100.0005, compute=0.004, push=0.001)])
    ev = [e for e in trace_events([a, b], "ps-async") if e["ph"] == "X"]
    got = [(e["tid"], e["name"], round(e["ts"]), round(e["dur"])) for e in ev]
    assert got == [(0, "data", 0, 1000), (0, "pull", 1000, 2000), (0, "compute", 3000, 3000),
                   (1, "compute", 500, 4000), (1, "push", 4500, 1000)]
    assert EXEC_ORDER.index("apply") < EXEC_ORDER.index("push")  # the PS push is the step's last call


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from psrec.ps.runner import run_ps

    d = tmp_path_factory.mktemp("runs")
    cfg = load_config(None, ["data.train_rows=2048", "data.eval_rows=256", "data.batch_size=128",
                             "train.progress=false", "ps.transport=inprocess", "ps.workers=2", "ps.num_ps=2",
                             f"run.dir={d}", "run.name=t", "run.save_model=false", "ps.metrics_port=-1"])
    return run_ps(cfg)


def test_steps_jsonl_has_every_worker_step(run):
    rows = [json.loads(line) for line in open(f"{run.path}/steps.jsonl")]
    assert len(rows) == sum(w["steps"] for w in run.per_worker) == 16
    assert {r["worker"] for r in rows} == {0, 1}
    r = rows[-1]
    assert set(r) >= {"step", "worker", "loss", "phases", "bytes_sent", "bytes_received", "seconds", "t_start"}
    assert r["loss"] > 0 and r["bytes_sent"] > 0 and sum(r["phases"].values()) == pytest.approx(r["seconds"])
    per_worker = {w["worker"]: w["bytes_sent"] for w in run.per_worker}
    assert sum(x["bytes_sent"] for x in rows if x["worker"] == 0) == per_worker[0]


def test_trace_json_puts_every_worker_on_one_time_axis(run):
    ev = json.load(open(f"{run.path}/trace.json"))["traceEvents"]
    x = [e for e in ev if e["ph"] == "X"]
    assert {e["tid"] for e in x} == {0, 1} and {e["name"] for e in x} >= {"data", "pull", "compute", "push"}
    total_us = sum(e["dur"] for e in x)
    assert total_us == pytest.approx(1e6 * sum(sum(w["phases"].values()) for w in run.per_worker), rel=1e-6)
    spans = {w: (min(e["ts"] for e in x if e["tid"] == w), max(e["ts"] + e["dur"] for e in x if e["tid"] == w))
             for w in (0, 1)}
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1]  # the threads trained at the same time


def test_timeline_png_is_written(run):
    head = open(f"{run.path}/timeline.png", "rb").read(8)
    assert head == b"\x89PNG\r\n\x1a\n"
