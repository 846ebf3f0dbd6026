"""PS training on real Ray actors (one Ray for the whole suite: the ray_session fixture)."""
import json
import urllib.request

import numpy as np
import torch
from test_ps_equivalence import BASE, B, K, local_params

from psrec.config import load_config
from psrec.core.progress import progress_bar
from psrec.metrics.prom import JobMetrics
from psrec.ps.runner import plan_ps, run_ps


def test_sync_ps_on_ray_matches_local(ray_session, tmp_path):
    from psrec.ps.ray_runner import RayPSJob

    want_rows, want_dense, _ = local_params(2)
    cfg = load_config(None, BASE + [f"data.batch_size={B}", f"data.train_rows={K * B * 2}", "ps.sync=true",
                                    "ps.workers=2", "ps.num_ps=2", "ps.metrics_port=-1"])
    plan = plan_ps(cfg)
    job = RayPSJob(plan, plan.source.build())
    with progress_bar(0, False) as bar:
        reports = job.train(bar, None)
    transport, dense = job.transport, job.dense()
    try:
        for t, want in want_rows.items():
            got = {}
            for keys, values in transport.broadcast("table_values", t):
                got.update(zip(keys.tolist(), values))
            keys = sorted(want)
            assert sorted(got) == keys
            torch.testing.assert_close(torch.from_numpy(np.stack([got[k] for k in keys])),
                                       torch.from_numpy(np.stack([want[k] for k in keys])), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(torch.from_numpy(dense), torch.from_numpy(want_dense), rtol=1e-5, atol=1e-6)
        assert all(len(r.steps) == K for r in reports)
    finally:
        job.close()


def test_async_hybrid_run_accounts_time_and_bytes(ray_session, tmp_path):
    cfg = load_config(None, ["synthetic.num_fields=8", "synthetic.num_dense=3", "data.train_rows=16384",
                             "data.eval_rows=4096", "data.batch_size=512", "ps.workers=2", "ps.num_ps=2",
                             "ps.dense=allreduce", "ps.net=\"bandwidth=1Gbit,latency=200us\"",
                             "train.progress=false", f"run.dir={tmp_path}", "ps.metrics_port=-1"])
    res = run_ps(cfg)
    assert res["mode"] == "ps-async-hybrid" and res["auc"] > 0.55
    for w in res["per_worker"]:
        assert w["steps"] == 16 and w["bytes_sent"] > 0 and w["bytes_received"] > 0
        for phase in ("data", "pull", "compute", "allreduce", "push"):
            assert w["phases"][phase] > 0, phase
    assert res["emulated_comm_fraction"] > res["comm_fraction"]  # the slow network adds time
    saved = json.loads((tmp_path / next(p.name for p in tmp_path.iterdir()) / "results.json").read_text())
    assert saved["per_ps"][0]["requests"] > 0
    # the global step is one counter: shard 0 handed out one step per worker step
    assert res["per_ps"][0]["global_step"] == 2 * 16


def test_prometheus_endpoint_serves_job_metrics():
    m = JobMetrics(0, run_id="r", mode="ps-async")
    try:
        m.worker(1, {"pull": 2.0, "compute": 6.0, "push": 2.0}, rows=100, sent=10, received=20, node="n1")
        m.shard(0, bytes_served=123, requests=4, rows=7, node="n2")
        text = urllib.request.urlopen(f"http://127.0.0.1:{m.port}/metrics", timeout=5).read().decode()
    finally:
        m.close()
    assert 'psrec_worker_phase_seconds_total{mode="ps-async",node="n1",phase="pull",run_id="r",worker="1"} 2.0' in text
    assert ('psrec_bytes_total{direction="sent",kind="ps",mode="ps-async",node="n2",ps="0",run_id="r",worker=""} 123.0'
            in text)
    assert 'psrec_ps_requests_total{mode="ps-async",node="n2",ps="0",run_id="r"} 4.0' in text


def test_async_workers_take_tasks_from_the_queue_around_a_straggler(ray_session, tmp_path):
    cfg = load_config(None, ["synthetic.num_fields=6", "synthetic.num_dense=2", "data.train_rows=24576",
                             "data.eval_rows=2048", "data.batch_size=512", "ps.workers=2", "ps.num_ps=1",
                             "ps.data=queue", "workqueue.task_rows=1024", "stragglers.factors=\"1:4x\"",
                             "train.progress=false", f"run.dir={tmp_path}", "ps.metrics_port=-1"])
    res = run_ps(cfg)
    acc = res["workqueue"]["accounting"]
    assert acc["exactly_once"] and acc["duplicates"] == 0
    tasks = {w["worker"]: w["tasks"] for w in res["per_worker"]}
    assert sum(tasks.values()) == 24
    assert tasks[0] > tasks[1]  # the fast worker took more of the work
    assert sum(w["rows"] for w in res["per_worker"]) == 24576  # every row trained once


def test_queue_needs_async_mode():
    import pytest

    from psrec.config import ConfigError

    with pytest.raises(ConfigError, match="ps.data"):
        load_config(None, ["ps.data=queue", "ps.sync=true"])
