"""PS training on Ray: PS shards and workers are actors; the driver polls and reports."""
from __future__ import annotations

import time

import ray

from psrec.ps.ray_transport import RayTransport, start_ps_actors
from psrec.ps.worker import PHASES, WorkerReport
from psrec.raysession import ensure_ray

__all__ = ["run_on_ray", "PSWorkerActor"]


@ray.remote(max_concurrency=2)  # one thread trains, the other answers progress polls
class PSWorkerActor:
    """A PSWorker in its own process, talking to the PS actors."""

    def __init__(self, plan, index: int, ps_actors, queue=None) -> None:
        import torch

        torch.set_num_threads(plan.cfg.ps.threads)
        self.plan, self.index, self.ps_actors, self.queue = plan, index, ps_actors, queue
        self.worker = None
        self._group = None

    def node_address(self) -> tuple[str, int]:
        from psrec.metrics.prom import free_port

        return ray.util.get_node_ip_address(), free_port()

    def setup(self, master: tuple[str, int] | None) -> int:
        """Build the worker; join the gloo group for hybrid (all-reduced dense) training."""
        from psrec.net import parse_net
        from psrec.ps.client import PSClient
        from psrec.ps.dense import TorchAllReduce
        from psrec.ps.worker import PSWorker

        plan, p = self.plan, self.plan.cfg.ps
        allreduce = None
        if master is not None:
            import torch.distributed as dist

            dist.init_process_group("gloo", init_method=f"tcp://{master[0]}:{master[1]}",
                                    rank=self.index, world_size=p.workers)
            allreduce = TorchAllReduce()
        model, layer, source = plan.build_worker_parts()
        client = PSClient(RayTransport(self.ps_actors), plan.partitioner, plan.dims, p.sync,
                          parse_net(p.net) if p.net else None, plan.dense_slices)
        stragglers = plan.stragglers()
        self.worker = PSWorker(self.index, p.workers, model, layer, client, source, p.dense,
                               plan.cfg.train.optimizer, plan.cfg.train.lr, allreduce, stragglers)
        return self.index

    def run(self) -> WorkerReport:
        plan = self.plan
        if self.queue is not None:
            q, w = self.queue, self.index
            return self.worker.run_tasks(lambda done: ray.get(q.complete_and_take.remote(w, done)),
                                         plan.batch_size)
        return self.worker.run(plan.rounds, plan.batch_size, plan.base_row)

    def progress(self) -> dict:
        """Cumulative figures so far (read while `run` goes on in the other thread)."""
        steps = list(self.worker.report.steps) if self.worker else []
        return {"steps": len(steps), "rows": sum(r.rows for r in steps),
                "phases": {p: sum(r.seconds.get(p, 0.0) for r in steps) for p in PHASES},
                "sent": sum(r.bytes_sent for r in steps), "received": sum(r.bytes_received for r in steps)}

    def dense(self):
        from psrec.ps.dense import flat_params

        return flat_params(self.worker.model)

    def shutdown(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def run_on_ray(plan, bar, metrics=None):
    """Train `plan` on Ray; returns (worker reports, transport, dense values, shard stats)."""
    from psrec.config_io import to_mapping

    p = plan.cfg.ps
    ensure_ray(p.address)
    ps_actors = start_ps_actors(p.num_ps, plan.ev_configs, p.workers, p.sync, plan.dense_specs(), p.ps_cpus)
    transport = RayTransport(ps_actors)
    queue = None
    if p.data == "queue":
        from workqueue.actor import WorkQueue

        end = plan.base_row + plan.rounds * p.workers * plan.batch_size
        queue = WorkQueue.start(plan.cfg.workqueue, p.workers, plan.base_row, end)
    workers = [PSWorkerActor.options(num_cpus=p.worker_cpus).remote(plan, w, ps_actors, queue and queue.actor)
               for w in range(p.workers)]
    queue_stats = None
    try:
        master = ray.get(workers[0].node_address.remote()) if p.dense == "allreduce" else None
        ray.get([w.setup.remote(master) for w in workers], timeout=300)
        runs = [w.run.remote() for w in workers]
        done_steps, t0 = 0, time.perf_counter()
        pending = list(runs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
            # A worker that failed ends the job now: in sync mode the others would otherwise
            # wait at the barrier for its pushes until the PS timeout.
            ray.get(ready)
            prog = ray.get([w.progress.remote() for w in workers])
            steps = sum(x["steps"] for x in prog)
            total = {ph: sum(x["phases"][ph] for x in prog) for ph in PHASES}
            wall = sum(total.values())
            comm = total["pull"] + total["push"] + total["allreduce"]
            rows = sum(x["rows"] for x in prog)
            bar.update(steps - done_steps, samples_per_s=rows / (time.perf_counter() - t0),
                       comm_pct=100.0 * comm / wall if wall else None)
            done_steps = steps
            if metrics is not None:
                for i, x in enumerate(prog):
                    metrics.worker(i, x["phases"], x["rows"], x["sent"], x["received"])
        reports = ray.get(runs)
        if queue is not None:
            queue_stats = {"accounting": queue.accounting(), "stats": queue.stats()}
        dense = (ray.get(workers[0].dense.remote()) if p.dense == "allreduce"
                 else _dense_from(transport))
        shard_stats = [to_mapping(s) for s in transport.broadcast("stats", True)]
        ray.get([w.shutdown.remote() for w in workers], timeout=30)
    finally:
        for w in workers:
            ray.kill(w)
        if queue is not None:
            queue.shutdown()
    return reports, transport, dense, shard_stats, queue_stats


def _dense_from(transport):
    import numpy as np

    replies = transport.broadcast("pull", {}, False, True, 0, False)
    return np.concatenate([r[1] for r in replies])
