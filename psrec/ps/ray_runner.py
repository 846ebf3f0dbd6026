"""PS training on Ray: PS shards and workers are actors; the driver polls and reports."""
from __future__ import annotations

import ray

from psrec.core.job import check_placement, poll_ray_workers
from psrec.core.lockstep import split_peer_wait
from psrec.core.placement import ActorPlacement, actor_nodes
from psrec.core.report import WorkerReport, progress_of
from psrec.core.step import COMM_PHASES
from psrec.ps.ray_transport import RayTransport, WireOptions, start_ps_actors
from psrec.ps.runner import PSPlan, _PSJob
from psrec.raysession import ensure_ray

__all__ = ["RayPSJob", "PSWorkerActor"]

SETUP_TIMEOUT_S = 300.0  # building a worker: its source (a file index), model, a gloo group


@ray.remote(max_concurrency=2)  # one thread trains, the other answers progress polls
class PSWorkerActor:
    """A PSWorker in its own process, talking to the PS actors."""

    def __init__(self, plan: PSPlan, index: int, ps_actors, queue=None, arrivals=None, shares=None) -> None:
        import torch

        torch.set_num_threads(plan.cfg.ps.threads)
        self.plan, self.index, self.ps_actors, self.queue, self.arrivals = plan, index, ps_actors, queue, arrivals
        self.shares = shares
        self.worker = None

    def node_address(self) -> tuple[str, int]:
        """Worker 0: open the dense group's rendezvous on a port bound now, and say where it is."""
        from psrec.comm.collectives import open_rendezvous

        host = ray.util.get_node_ip_address()
        self._store, port = open_rendezvous(host, self.plan.cfg.ps.workers, SETUP_TIMEOUT_S)
        return host, port

    def setup(self, master: tuple[str, int] | None) -> int:
        """Build the worker (rebuilding the run's source from the plan); join the gloo group
        for hybrid (all-reduced dense) training."""
        comm = None
        if master is not None:
            from psrec.comm.collectives import init_torch_group

            comm = init_torch_group(master, self.index, self.plan.cfg.ps.workers, "gloo", SETUP_TIMEOUT_S,
                                    store=getattr(self, "_store", None))
        transport = RayTransport(self.ps_actors, mode=self.plan.cfg.ps.transport)
        board = None
        if self.arrivals is not None:
            from workqueue.arrivals import RayBoard

            board = RayBoard(self.arrivals, timeout_s=self.plan.cfg.run.stall_timeout_s)
        self.worker = self.plan.build_worker(self.index, transport, comm, board=board)
        return self.index

    def run(self, start: int, stop: int) -> WorkerReport:
        """Train rounds [start, stop) (the queue's tasks with `ps.data = "queue"`)."""
        plan = self.plan
        if self.queue is not None:
            q, w = self.queue, self.index
            return self.worker.run_tasks(lambda done: ray.get(q.complete_and_take.remote(w, done)),
                                         plan.batch_size)
        if self.shares is not None:
            from workqueue.round_shares import RayRoundShares

            shares = RayRoundShares(self.shares, timeout_s=plan.cfg.run.stall_timeout_s)
            return self.worker.run_proportional(shares, start, stop, plan.batch_size, plan.base_row, plan.per_epoch)
        return self.worker.run(start, stop, plan.batch_size, plan.base_row, plan.per_epoch)

    def save_dense(self, path: str) -> None:
        from psrec.core.dense_state import save_dense

        save_dense(path, self.worker.model, self.worker.step.dense.optimizer)

    def load_dense(self, path: str) -> None:
        from psrec.core.dense_state import load_dense

        load_dense(path, self.worker.model, self.worker.step.dense.optimizer)

    def progress(self) -> dict:
        """Cumulative figures so far (read while `run` goes on in the other thread)."""
        return progress_of(self.worker.report if self.worker else None)

    def malformed(self) -> list:
        return self.worker.source.malformed_lines() if self.worker else []

    def dense(self):
        from psrec.core.flat import flat_params

        return flat_params(self.worker.model)

    def shutdown(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


class RayPSJob(_PSJob):
    """PS actors and worker actors (a local Ray starts unless `ps.address` names a cluster)."""

    def __init__(self, plan: PSPlan, source, run_dir: str = "", resume_dir: str = "") -> None:
        """`run_dir`, `resume_dir`: where Export/Restore over gRPC may name paths (`WireOptions`)."""
        p = plan.cfg.ps
        self.plan, self.eval_source = plan, source
        ensure_ray(p.address)
        check_placement([(f"{p.num_ps} PS x {p.ps_cpus:g}", p.num_ps * p.ps_cpus),
                         (f"{p.workers} workers x {p.worker_cpus:g}", p.workers * p.worker_cpus)])
        # one bundle per PS, then one per worker; spread over the nodes of a multi-node cluster
        self.placement = ActorPlacement(p.placement, [p.ps_cpus] * p.num_ps + [p.worker_cpus] * p.workers)
        try:
            # with backup workers a step is applied once the first workers - backup pushes are in
            self.ps_actors = start_ps_actors(p.num_ps, plan.ev_configs, p.workers - p.backup, p.sync,
                                             plan.dense_specs(), p.ps_cpus,
                                             wire=WireOptions.for_job(p, run_dir, resume_dir),
                                             placement=[self.placement.options(i) for i in range(p.num_ps)],
                                             staleness=p.staleness)
        except BaseException:
            self.placement.remove()
            raise
        self.transport = RayTransport(self.ps_actors, mode=p.transport)
        self.queue = self.arrivals = self.shares = None
        self.workers = []
        try:
            if p.backup:
                from workqueue.arrivals import ArrivalsActor

                self.arrivals = ArrivalsActor.remote()
            if p.data == "proportional":
                from workqueue.round_shares import RoundSharesActor

                self.shares = RoundSharesActor.remote(p.workers, p.workers * plan.batch_size, plan.cfg.shares)
            if p.data == "queue":
                from workqueue.actor import WorkQueue

                self.queue = WorkQueue.start(plan.cfg.workqueue, p.workers, *plan.queue_rows, splits=plan.queue_splits)
            queue = self.queue and self.queue.actor
            self.workers = [PSWorkerActor.options(num_cpus=p.worker_cpus, **self.placement.options(p.num_ps + w))
                            .remote(plan, w, self.ps_actors, queue, self.arrivals, self.shares)
                            for w in range(p.workers)]
            master = ray.get(self.workers[0].node_address.remote(), timeout=SETUP_TIMEOUT_S) \
                if p.dense == "allreduce" else None
            ray.get([w.setup.remote(master) for w in self.workers], timeout=SETUP_TIMEOUT_S)
            self.actor_nodes = {"placement": p.placement, "ps": actor_nodes(self.ps_actors),
                          "workers": actor_nodes(self.workers)}  # which node each actor runs on
        except BaseException:
            self.close()
            raise

    def train(self, bar, metrics, start=0, stop=None):
        workers = self.workers
        stop = self.plan.rounds if stop is None else stop
        reports = poll_ray_workers([w.run.remote(start, stop) for w in workers], workers, bar, metrics, COMM_PHASES,
                                   timeout_s=60, stall_s=self.plan.cfg.run.stall_timeout_s)
        if self.plan.cfg.ps.dense == "allreduce":
            split_peer_wait(reports)  # a hybrid worker's wait for the slowest at the all-reduce
        if self.queue is not None:
            self.queue_stats = {"accounting": self.queue.accounting(), "stats": self.queue.stats()}
        from psrec.config_io import to_mapping

        self.shard_stats = [to_mapping(s) for s in self.transport.broadcast("stats", True)]
        return reports

    def dense(self):
        if self.plan.cfg.ps.dense == "allreduce":
            return ray.get(self.workers[0].dense.remote(), timeout=60)
        return super().dense()

    def details(self):
        return {**super().details(), "actor_nodes": self.actor_nodes}

    def _save_replica(self, path):
        ray.get(self.workers[0].save_dense.remote(str(path)), timeout=SETUP_TIMEOUT_S)

    def _load_replicas(self, path):
        ray.get([w.load_dense.remote(str(path)) for w in self.workers], timeout=SETUP_TIMEOUT_S)

    def malformed(self):
        return [m for part in ray.get([w.malformed.remote() for w in self.workers], timeout=60) for m in part]

    def actor_names(self) -> dict[str, str]:
        return {**{a._actor_id.hex(): f"PS {i}" for i, a in enumerate(self.ps_actors)},
                **{a._actor_id.hex(): f"worker {i}" for i, a in enumerate(self.workers)}}

    def close(self) -> None:
        workers, self.workers = self.workers, []
        try:
            ray.get([w.shutdown.remote() for w in workers], timeout=30)
        except Exception:  # noqa: BLE001 - a dead or stuck worker: killed below either way
            pass
        for w in workers:
            ray.kill(w)
        if self.queue is not None:
            self.queue.shutdown()
            self.queue = None
        for coordinator in (self.arrivals, self.shares):
            if coordinator is not None:
                ray.kill(coordinator)
        self.arrivals = self.shares = None
        super().close()
        self.placement.remove()
