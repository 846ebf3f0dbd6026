"""The work queue over Ray: the queue actor, worker actors, a killed worker, and the
`psrec longtail` command on a tiny job. Uses the session's single local Ray."""
import json
import re
import sys
import time

import pytest

ray = pytest.importorskip("ray")

from workqueue import StragglerConfig, WorkQueueConfig  # noqa: E402
from workqueue.actor import WorkerGroup, WorkQueue  # noqa: E402

# Worker actors import work functions by module name; this test module is not importable
# there (tests/ is not a package on their path), so ship its functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

CPU = 0.25  # fractional requests: several actors on the fixture's 8 logical CPUs


def count_rows(start: int, end: int) -> int:
    time.sleep(0.002)
    return end - start


def stuck(start: int, end: int) -> int:
    time.sleep(120)  # killed long before
    return end - start


class Flagged:
    """A work function that marks `flag` when it starts a task, or that waits (30 s at
    most) for `flag` before its first: so the fast workers cannot drain the queue before
    the stuck one holds a task, however late a loaded machine starts it."""

    def __init__(self, work, flag, raise_flag: bool) -> None:
        self.work, self.flag, self.raise_flag = work, flag, raise_flag

    def __call__(self, start: int, end: int) -> int:
        if self.raise_flag:
            self.flag.touch()
        else:
            deadline = time.monotonic() + 30
            while not self.flag.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        return self.work(start, end)


@pytest.fixture
def queue_and_group(ray_session):
    made = []

    def make(config, num_workers, rows, work, **kw):
        q = WorkQueue.start(config, num_workers, 0, rows, num_cpus=CPU)
        g = WorkerGroup(work, num_workers, num_cpus=CPU, **kw)
        made.append((q, g))
        return q, g

    yield make
    for q, g in made:  # bounded shutdown even when a test fails
        g.shutdown(patience_s=2.0)
        q.shutdown(patience_s=2.0)


def test_workers_take_every_task_exactly_once(queue_and_group):
    cfg = WorkQueueConfig(task_rows=10, epochs=2)
    q, g = queue_and_group(cfg, 3, 205, count_rows, stragglers=StragglerConfig(factors="2:3x"))
    g.start(timeout_s=60)
    assert q.health()["ok"] and all(g.health())
    g.launch(q, start_delay_s=0.1)
    out = g.wait(timeout_s=60)
    assert not out["timed_out"] and out["lost"] == []
    records = [r for res in out["results"].values() for r in res["tasks"]]
    assert sorted((r["epoch"], r["index"]) for r in records) == [(e, i) for e in range(2) for i in range(21)]
    assert sum(r["rows"] for r in records) == 2 * 205
    assert all(r["extra_s"] > 0 for r in records if r["worker"] == 2)  # the straggler's extra time
    acc = q.accounting()
    assert acc["exactly_once"] and acc["duplicates"] == 0
    assert q.stats()["requeues"] == 0
    snap = q.metrics_snapshot()
    assert snap["depth"] == 0 and sum(w["rows"] for w in snap["workers"].values()) == 410
    assert "workqueue_depth" in q.metrics_text()
    assert q.checkpoint()["done"][1]  # a final checkpoint is available


def test_killed_worker_task_is_requeued_and_done_by_another(queue_and_group, tmp_path):
    cfg = WorkQueueConfig(task_rows=10, lease_timeout_s=300.0)  # recovery must not wait for expiry
    flag = tmp_path / "stuck-started"
    work = [Flagged(stuck, flag, True), Flagged(count_rows, flag, False), Flagged(count_rows, flag, False)]
    q, g = queue_and_group(cfg, 3, 300, work)
    g.start(timeout_s=60)
    g.launch(q, start_delay_s=0.1)
    deadline = time.monotonic() + 30
    while not (held := q.leases().get(0)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert held, "worker 0 never took a task"
    (task,) = held
    g.kill(0)  # mid-task: `stuck` holds it for minutes
    out = g.wait(timeout_s=60)
    assert out["lost"] == [0] and not out["timed_out"]
    assert q.done_by(0)[task.index] in (1, 2)
    st, acc = q.stats(), q.accounting()
    assert st["requeued_lost"] == 1 and acc["exactly_once"] and acc["duplicates"] == 0
    assert 0 in st["lost"]


def test_queue_checkpoint_restores_into_a_new_actor(queue_and_group):
    cfg = WorkQueueConfig(task_rows=10)
    q, _ = queue_and_group(cfg, 2, 50, count_rows)
    t = q.take(0)
    q.done(0, t)
    held = q.take(1)
    state = q.checkpoint()
    q2 = WorkQueue.start(cfg, 2, 0, 50, state=state, num_cpus=CPU)
    try:
        assert q2.take(0) == held  # re-queued from the old incarnation's lease
        assert q2.stats()["done"] == 1
    finally:
        assert q2.shutdown(patience_s=2.0)["version"] == 1


def test_longtail_command_tiny(ray_session, tmp_path, capsys):
    from psrec.cli import main

    rc = main(["longtail", "--workers", "2", "--straggler", "1:3x", "--rows", "3000", "--task-rows", "250",
               "--model", "lr", "--set", "synthetic.num_fields=8", "--set", "synthetic.num_dense=3",
               "--set", "data.batch_size=250", "--set", f"run.dir={tmp_path}", "--name", "tiny"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"static_vs_ideal=\S+ dynamic_vs_ideal=\S+ speedup=\S+ take_overhead=\S+", lines[-1])
    run = tmp_path / "tiny"
    res = json.loads((run / "results.json").read_text())
    for policy in ("static", "dynamic"):
        p = res["policies"][policy]
        assert p["queue"]["accounting"]["exactly_once"]
        assert sum(w["rows"] for w in p["summary"]["workers"]) == 3000
        assert (run / f"gantt_{policy}.png").stat().st_size > 0
    assert res["stragglers"]["base_factors"] == [1.0, 3.0]
    assert res["comparison"]["static_vs_ideal_dedicated_cores"] == pytest.approx(2.0)  # 3 x 1/2 x (1 + 1/3)
