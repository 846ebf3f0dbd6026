"""Collective training on real Ray actors over torch.distributed (gloo): the equivalence
oracle and the run's accounting (one Ray for the suite: the ray_session fixture)."""
import json

import pytest
from test_collective import K, assert_matches_local, collective_plan, local_reference

from collective.config import CollectiveConfig
from collective.runner import RayJob, run_collective
from psrec.config import load_config


@pytest.mark.parametrize("sharding, overlap", [("row", True), ("table", False)])
def test_collective_on_ray_matches_local(ray_session, sharding, overlap):
    """2 ranks x K plain-SGD steps == K local steps on the union of their batches: every
    embedding row on both shards (values, freq, version) and both dense replicas."""
    setup = local_reference(2)
    job = RayJob(collective_plan(2, sharding, overlap, bucket_bytes=256, transport="ray"))
    try:
        assert job.backend == "gloo"
        reports = job.train()
        assert [len(r.steps) for r in reports] == [K, K]
        assert_matches_local(setup, job.table_values, job.dense_all)
    finally:
        job.close()


def test_run_collective_accounts_time_bytes_and_metrics(ray_session, tmp_path):
    cfg = load_config(None, ["synthetic.num_fields=8", "synthetic.num_dense=3", "data.train_rows=8192",
                             "data.eval_rows=2048", "data.batch_size=512", "train.progress=false",
                             f"run.dir={tmp_path}"])
    coll = CollectiveConfig(workers=2, net="bandwidth=1Gbit,latency=200us", metrics_port=-1, bucket_bytes=16384)
    res = run_collective(cfg, coll=coll)
    assert res["mode"] == "collective" and res["auc"] > 0.55 and res["eval_rows"] == 2048
    assert res["steps"] == 8 and res["train_rows"] == 8192
    for w in res["per_worker"]:
        assert w["steps"] == 8
        for phase in ("data", "wait", "alltoall", "lookup", "compute", "allreduce", "apply"):
            assert w["phases"][phase] > 0, phase
        assert w["allreduce_total_seconds"] >= w["allreduce_exposed_seconds"] > 0
        # 4 all-to-alls (1 message each on 2 ranks) + a ring all-reduce (2 messages) per dense bucket
        assert res["dense_buckets"] > 1 and w["messages"] == 8 * (4 + 2 * res["dense_buckets"])
    kinds = res["bytes_per_step_by_kind"]
    assert set(kinds) == {"sizes", "keys", "rows", "grads", "dense"}
    # per rank and step: (sent + received) x 8 bytes x 2 tables (emb, linear) x 1 peer
    assert kinds["sizes"] == 2 * 8 * 2
    # ring on 2 ranks: a rank sends half of every bucket twice and receives as much
    assert kinds["dense"] == 2 * 4 * res["dense_params"]
    assert res["emulated_comm_fraction"] > res["comm_fraction"] > 0  # the slow network adds time
    assert res["step_p95"] >= res["step_p50"] > 0 and res["bytes_per_step"] > 0
    run_dir = tmp_path / next(p.name for p in tmp_path.iterdir())
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["per_shard"][0]["keys_served"] > 0 and saved["shard_imbalance"]["rows"] < 1.2
    prom = (run_dir / "metrics.prom").read_text()
    assert 'psrec_worker_phase_seconds_total{mode="collective",' in prom and 'phase="alltoall"' in prom
    assert "psrec_worker_allreduce_hidden_seconds_total" in prom and "psrec_shard_rows" in prom
