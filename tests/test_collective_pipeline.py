"""The pipelined collective step (`train.pipeline`): "keys" sends the next batch's keys on a
side group during this step and fetches its rows after this step's update, so it must equal
local training exactly as the plain step does; "stale1" fetches the rows ahead too, one step
stale: deterministic, and not the plain step's result."""
import numpy as np
import pytest
from test_collective import K, assert_matches_local, collective_plan, local_reference

from collective.config import CollectiveConfig
from collective.runner import InProcessJob, RayJob, plan_collective
from psrec.config import load_config
from psrec.core.local import run_local
from psrec.ps.runner import plan_ps


def _train(plan_args, extra=(), job_cls=InProcessJob):
    job = job_cls(collective_plan(*plan_args, extra=list(extra)))
    try:
        reports = job.train()
        tables = {t: job.table_values(t) for t in ("emb", "linear")}
        return reports, tables, job.dense_all()
    finally:
        job.close()


@pytest.mark.parametrize("workers, sharding", [(2, "row"), (3, "table")])
def test_keys_pipeline_matches_local(workers, sharding):
    setup = local_reference(workers)
    job = InProcessJob(collective_plan(workers, sharding, extra=["train.pipeline=keys"]))
    try:
        reports = job.train()
        assert all(len(r.steps) == K for r in reports)
        assert_matches_local(setup, job.table_values, job.dense_all)
        for rep in reports:
            first, *rest = rep.steps
            assert first.prefetch_total == 0.0  # a segment's first step has nothing ahead
            assert all(s.prefetch_total > 0 and 0 <= s.prefetch_hidden <= s.prefetch_total for s in rest)
            # the keys went over the side group, booked with the step that used them
            assert all(s.traffic.bytes_by_tag.get("keys", 0) > 0 for s in rest)
    finally:
        job.close()


def _flat(tables) -> dict[str, dict[int, np.ndarray]]:
    return {t: {k: v for keys, values, _f, _v in parts for k, v in zip(keys.tolist(), values)}
            for t, parts in tables.items()}


def test_stale1_is_one_step_stale_and_deterministic():
    plain = _train((2,))
    stale = [_train((2,), ["train.pipeline=stale1"]) for _ in range(2)]
    (_, ta, da), (_, tb, db) = stale
    fa, fb, fp = _flat(ta), _flat(tb), _flat(plain[1])
    for t in fa:
        assert fa[t].keys() == fb[t].keys() == fp[t].keys()
        for k in fa[t]:
            np.testing.assert_array_equal(fa[t][k], fb[t][k])  # the same stale rows every run
    np.testing.assert_array_equal(da[0], db[0])
    # rows read before the previous update: the result is not the plain step's
    assert any(not np.allclose(fa["emb"][k], fp["emb"][k], rtol=0, atol=1e-7) for k in fa["emb"])
    assert all(np.isfinite(s.loss) for s in stale[0][0][0].steps)


def test_pipeline_is_refused_where_it_does_not_apply():
    cfg = load_config(None, ["train.pipeline=keys", "data.train_rows=2048", "data.eval_rows=256"])
    with pytest.raises(ValueError, match="collective runs; PS runs"):
        plan_ps(cfg)
    with pytest.raises(ValueError, match="collective runs; local runs"):
        run_local(cfg)
    with pytest.raises(ValueError, match="needs collective.data"):
        plan_collective(cfg, CollectiveConfig(workers=2, data="queue", transport="inprocess", metrics_port=-1))
    with pytest.raises(ValueError, match="pipeline"):
        load_config(None, ["train.pipeline=both"])


def test_keys_pipeline_on_ray_matches_local(ray_session):
    """Real torch.distributed: the side group is a second gloo group of the same ranks."""
    setup = local_reference(2)
    job = RayJob(collective_plan(2, bucket_bytes=256, transport="ray", extra=["train.pipeline=keys"]))
    try:
        reports = job.train()
        assert [len(r.steps) for r in reports] == [K, K]
        assert_matches_local(setup, job.table_values, job.dense_all)
        assert all(s.prefetch_total > 0 for r in reports for s in r.steps[1:])
    finally:
        job.close()
