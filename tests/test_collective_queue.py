"""Collective ranks fed by the work queue (`collective.data = "queue"`): every row trained
once per epoch, plain SGD equal to local training on the same rows step by step, lockstep
termination when tasks do not divide among the ranks, and the straggler's peers waiting for
it at the barrier. In process, plus one run on the session's Ray."""
from __future__ import annotations

import re

import numpy as np
import pytest
from test_collective import BASE, assert_matches_local

from collective.config import CollectiveConfig
from collective.runner import InProcessJob, plan_collective
from psrec.config import ConfigError, load_config
from psrec.core.local import build_local
from psrec.data.base import concat_batches

B = 64  # rows per step and rank


def queue_plan(workers: int, rows: int, task_rows: int, policy: str = "dynamic", epochs: int = 1,
               extra=(), transport: str = "inprocess"):
    cfg = load_config(None, BASE + [f"data.batch_size={B}", f"data.train_rows={rows}",
                                    f"workqueue.task_rows={task_rows}", f"workqueue.policy={policy}",
                                    f"workqueue.epochs={epochs}"] + list(extra))
    coll = CollectiveConfig(workers=workers, transport=transport, data="queue", metrics_port=-1, bucket_bytes=64)
    return plan_collective(cfg, coll)


def spans_by_epoch(reports) -> dict[int, list[tuple[int, int]]]:
    """epoch -> sorted row spans the ranks trained in it (empty steps left out)."""
    out: dict[int, list[tuple[int, int]]] = {}
    for r in reports:
        for s in r.steps:
            if s.rows:
                out.setdefault(s.task[0], []).append(s.span)
    return {e: sorted(v) for e, v in out.items()}


def local_replay(plan, reports):
    """Local training that takes, at step k, the union of the rows every rank trained at its
    step k (rank order), as one batch: what the queue-fed ranks computed together."""
    setup = build_local(plan.cfg)
    steps = len(reports[0].steps)
    for k in range(steps):
        parts = [setup.source.read(*r.steps[k].span) for r in reports if r.steps[k].rows]
        setup.step.train_batch(concat_batches(parts), reports[0].steps[k].step)
    return setup


@pytest.mark.parametrize("workers, policy, epochs", [(3, "dynamic", 2), (2, "static", 1), (3, "stealing", 1)])
def test_every_row_is_trained_exactly_once_per_epoch(workers, policy, epochs):
    rows, task_rows = 1000, 150  # 7 tasks, the last of 100 rows; a task's last batch is 22 rows
    job = InProcessJob(queue_plan(workers, rows, task_rows, policy, epochs))
    try:
        reports = job.train()
        acc = job.queue_stats["accounting"]
    finally:
        job.close()
    assert acc["exactly_once"] and acc["duplicates"] == 0
    by_epoch = spans_by_epoch(reports)
    assert sorted(by_epoch) == list(range(epochs))
    for spans in by_epoch.values():
        covered = np.zeros(rows, np.int64)
        for a, b in spans:
            covered[a:b] += 1
        assert covered.tolist() == [1] * rows  # every row once, none twice
        assert max(b - a for a, b in spans) == B and min(b - a for a, b in spans) < B  # uneven batches
    assert len({len(r.steps) for r in reports}) == 1  # lockstep: every rank ran every step
    assert sum(r.summary()["rows"] for r in reports) == rows * epochs
    assert sum(r.tasks for r in reports) == 7 * epochs == job.queue_stats["stats"]["done"]


@pytest.mark.parametrize("workers, policy", [(2, "dynamic"), (3, "static")])
def test_queue_fed_sgd_matches_local_training_on_the_same_rows(workers, policy):
    """With plain SGD, K lockstep steps of ranks with uneven (and empty) batches equal K local
    steps on the union of their rows: each rank weights its mean loss by rows_r / R, so the
    summed gradients are those of the mean over the step's R rows. The queue decides which
    rows form a step; given that schedule (read from the reports) the result is the same."""
    plan = queue_plan(workers, 700, 150, policy)  # 5 tasks: ranks run out at different steps
    job = InProcessJob(plan)
    try:
        reports = job.train()
        assert any(s.rows == 0 for r in reports for s in r.steps)  # the replay covers empty steps
        assert len({s.rows for r in reports for s in r.steps if s.rows}) > 1  # and uneven batches
        setup = local_replay(plan, reports)
        assert_matches_local(setup, job.table_values, job.dense_all)
    finally:
        job.close()


@pytest.mark.parametrize("workers, tasks", [(3, 4), (3, 1), (4, 6), (1, 3)])
def test_ranks_stop_together_when_tasks_do_not_divide_among_them(workers, tasks):
    """Static shares of `tasks` one-step tasks over `workers` ranks (sizes differ by at most
    one): the job takes as many steps as the largest share; a rank whose share is used up
    runs empty steps until then, and all stop at the same round."""
    from workqueue.tasks import contiguous_shares

    job = InProcessJob(queue_plan(workers, tasks * B, B, "static"))
    try:
        reports = job.train()
        acc = job.queue_stats["accounting"]
    finally:
        job.close()
    shares = [len(s) for s in contiguous_shares(tasks, workers)]
    assert acc["exactly_once"]
    assert [len(r.steps) for r in reports] == [max(shares)] * workers
    assert [r.summary()["idle_steps"] for r in reports] == [max(shares) - s for s in shares]
    assert [r.tasks for r in reports] == shares
    # one control all-reduce per step, plus the final round on which they agree to stop
    assert all(s.bytes_by_tag.get("control", 0) > 0 for r in reports for s in r.steps) or workers == 1


def test_a_stragglers_peers_wait_for_it_under_any_policy():
    """Rank 1 is 10x slower. In lockstep its peers wait for it at every step's rendezvous,
    under the static and the dynamic queue alike, and the dynamic queue cannot hand it fewer
    rows: every rank trains one batch per step, so all use up their tasks at the same pace
    (6 tasks of 3 steps for 3 ranks: each takes 2, whatever the policy)."""
    for policy in ("static", "dynamic"):
        job = InProcessJob(queue_plan(3, 6 * 192, 192, policy, extra=['stragglers.factors="1:10x"']))
        try:
            s = [r.summary() for r in job.train()]
        finally:
            job.close()
        slow, peers = s[1], [s[0], s[2]]
        assert [x["steps"] for x in s] == [6, 6, 6] and [x["idle_steps"] for x in s] == [0, 0, 0]
        assert [x["rows"] for x in s] == [384, 384, 384], policy
        assert slow["straggler_seconds"] > 0 and all(p["straggler_seconds"] == 0 for p in peers)
        assert all(p["sync_wait_seconds"] > 2 * slow["sync_wait_seconds"] for p in peers), policy
        assert all(p["sync_wait_seconds"] > 0.3 * slow["straggler_seconds"] for p in peers), policy


def test_collective_data_is_a_checked_config_key():
    assert load_config(None, ['collective.data="queue"']).collective.data == "queue"
    with pytest.raises(ConfigError, match="collective.data"):
        load_config(None, ['collective.data="shuffled"'])


def test_lockstep_summary_by_hand():
    from workqueue.longtail import summarize_lockstep

    # 3 ranks, 8 steps of 100 rows: rank 2 is busy 4 s, the others 1 s and wait 3 s each
    ranks = [{"worker": w, "rows": 800, "steps": 8, "idle_steps": 0, "run_s": 4.0, "sync_wait_s": wait,
              "straggler_s": 3.0 if w == 2 else 0.0} for w, wait in enumerate([3.0, 3.0, 0.0])]
    s = summarize_lockstep(ranks)
    assert s["makespan_s"] == 4.0 and s["slowest"] == 2 and s["slowest_busy_s"] == 4.0
    # speeds 800, 800, 200 rows/s: ideal = 2400 / 1800 s; the lockstep pays 4 / (4/3) = 3x
    assert s["ideal_makespan_s"] == pytest.approx(4 / 3) and s["vs_ideal"] == pytest.approx(3.0)
    assert s["peer_wait_fraction"] == pytest.approx(0.75) and s["slowest_rows_share"] == pytest.approx(1 / 3)


def test_longtail_collective_mode_in_process(tmp_path, capsys):
    from psrec.cli import main

    rc = main(["longtail", "--mode", "collective", "--workers", "2", "--straggler", "1:3x", "--rows", "1500",
               "--task-rows", "250", "--model", "lr", "--set", "synthetic.num_fields=8",
               "--set", "synthetic.num_dense=3", "--set", "data.batch_size=125",
               "--set", "collective.transport=\"inprocess\"", "--set", f"run.dir={tmp_path}", "--name", "coll"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"collective_static_vs_ideal=\S+ collective_dynamic_vs_ideal=\S+ "
                        r"collective_speedup=\S+ collective_peer_wait_fraction=\S+", lines[-1])
    import json

    res = json.loads((tmp_path / "coll" / "results.json").read_text())
    for policy in ("static", "dynamic"):
        p = res["collective"]["policies"][policy]
        assert p["queue"]["accounting"]["exactly_once"]
        assert p["summary"]["total_rows"] == 1500 and p["summary"]["steps"] == 6


def test_queue_fed_collective_on_ray_matches_local(ray_session):
    """The Ray path: ranks in actors over gloo, tasks from the queue actor, a straggler."""
    from collective.runner import RayJob

    plan = queue_plan(2, 700, 150, "dynamic", extra=['stragglers.factors="1:2x"'], transport="ray")
    job = RayJob(plan)
    try:
        reports = job.train()
        assert job.queue_stats["accounting"]["exactly_once"]
        assert all(sum(s.rows for s in r.steps) > 0 for r in reports)
        assert sum(s.straggler for s in reports[1].steps) > 0 and sum(s.straggler for s in reports[0].steps) == 0
        spans = spans_by_epoch(reports)[0]
        assert sum(b - a for a, b in spans) == 700 and len(set(spans)) == len(spans)
        setup = local_replay(plan, reports)
        assert_matches_local(setup, job.table_values, job.dense_all)
    finally:
        job.close()
