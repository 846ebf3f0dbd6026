"""Child process of test_multinode.py: a Ray cluster of two real nodes on this machine (Ray's
own `ray.cluster_utils.Cluster`: two raylets, two object stores, one GCS), on which sync PS
(Ray and gRPC transports) and collective training run with their actors spread over both nodes
and are checked against local training (the oracles of test_ps_ray.py / test_collective_ray.py).

Run as its own process because the suite's `ray_session` holds one single-node Ray per pytest
process. Prints one JSON line: per job, which node each actor ran on and each worker's routes.
Any mismatch raises (non-zero exit, the assertion on stderr).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

torch.set_num_threads(1)


def ps_job(transport: str, num_ps: int) -> dict:
    from test_ps_equivalence import BASE, B, K, local_params

    from psrec.config import load_config
    from psrec.core.progress import progress_bar
    from psrec.ps.ray_runner import RayPSJob
    from psrec.ps.runner import plan_ps

    want_rows, want_dense, _ = local_params(2)
    cfg = load_config(None, BASE + [f"data.batch_size={B}", f"data.train_rows={K * B * 2}", "ps.sync=true",
                                    "ps.workers=2", f"ps.num_ps={num_ps}", "ps.metrics_port=-1",
                                    f"ps.transport={transport}", "ps.placement=spread"])
    plan = plan_ps(cfg)
    job = RayPSJob(plan, plan.source.build())
    try:
        with progress_bar(0, False) as bar:
            reports = job.train(bar, None)
        assert all(len(r.steps) == K for r in reports)
        for t, want in want_rows.items():
            got = {}
            for keys, values in job.transport.broadcast("table_values", t):
                got.update(zip(keys.tolist(), values))
            keys = sorted(want)
            assert sorted(got) == keys, t
            torch.testing.assert_close(torch.from_numpy(np.stack([got[k] for k in keys])),
                                       torch.from_numpy(np.stack([want[k] for k in keys])), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(torch.from_numpy(job.dense()), torch.from_numpy(want_dense), rtol=1e-5, atol=1e-6)
        routes = ray.get([w.__ray_call__.remote(lambda self: self.worker.step.store.transport.routes)
                          for w in job.workers], timeout=60)
        return {**job.details()["actor_nodes"], "routes": routes}
    finally:
        job.close()


def collective_job() -> dict:
    from test_collective import assert_matches_local, collective_plan, local_reference

    from collective.runner import RayJob

    setup = local_reference(2)
    job = RayJob(collective_plan(2, "row", True, bucket_bytes=256, transport="ray"))
    try:
        reports = job.train()
        assert [len(r.steps) for r in reports] == [5, 5]
        assert_matches_local(setup, job.table_values, job.dense_all)
        return job.actor_nodes
    finally:
        job.close()


def placements() -> dict:
    """Two bare actors under each strategy: the node each landed on."""
    from psrec.core.placement import ActorPlacement, actor_nodes

    @ray.remote
    class Probe:
        def ping(self) -> int:
            return 1

    out = {}
    for strategy in ("spread", "pack"):
        pl = ActorPlacement(strategy, [0.5, 0.5])
        actors = [Probe.options(num_cpus=0.5, **pl.options(i)).remote() for i in range(2)]
        ray.get([a.ping.remote() for a in actors], timeout=60)
        out[strategy] = [a["node_id"] for a in actor_nodes(actors)]
        for a in actors:
            ray.kill(a)
        pl.remove()
    return out


def main() -> None:
    store, t0 = 100 << 20, time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "object_store_memory": store,
                                                            "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=2, object_store_memory=store)
        cluster.wait_for_nodes(timeout=60)
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
        print(f"cluster: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        out = {"nodes": sum(1 for n in ray.nodes() if n["Alive"])}
        for name, job in (("placements", placements), ("ps_ray", lambda: ps_job("ray", 2)),
                          ("ps_grpc", lambda: ps_job("grpc", 1)), ("collective", collective_job)):
            t0 = time.perf_counter()
            out[name] = job()
            print(f"{name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        print(json.dumps(out))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
