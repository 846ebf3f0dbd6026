"""Prometheus metrics of a training job, served over HTTP by the driver.

Workers and shards report to the driver (it polls them); the driver owns one registry and
one HTTP endpoint, so a scrape sees the whole job. Names:

    psrec_worker_phase_seconds_total{worker, phase}   time per phase (data, pull, wait, compute, allreduce, push)
    psrec_worker_samples_total{worker}                rows trained
    psrec_worker_bytes_total{worker, direction}       payload bytes sent / received
    psrec_worker_comm_fraction{worker}                communication time / step time so far
    psrec_ps_bytes_served_total{ps}, psrec_ps_requests_total{ps}, psrec_ps_rows{ps}
"""
from __future__ import annotations

import socket

from prometheus_client import CollectorRegistry, Gauge, start_http_server

__all__ = ["JobMetrics", "free_port"]


def free_port() -> int:
    """A TCP port that is free on this host right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JobMetrics:
    """Gauges for one job. Values are set from cumulative snapshots (so re-reporting is safe).

    Args:
        port: serve on this port; 0 picks a free one; -1 serves nothing (values still kept).
    """

    def __init__(self, port: int = 0, addr: str = "127.0.0.1") -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.phase = Gauge("psrec_worker_phase_seconds_total", "seconds per step phase", ["worker", "phase"],
                           registry=r)
        self.samples = Gauge("psrec_worker_samples_total", "rows trained", ["worker"], registry=r)
        self.bytes = Gauge("psrec_worker_bytes_total", "payload bytes", ["worker", "direction"], registry=r)
        self.comm = Gauge("psrec_worker_comm_fraction", "communication / step time", ["worker"], registry=r)
        self.ps_bytes = Gauge("psrec_ps_bytes_served_total", "bytes served by a PS", ["ps"], registry=r)
        self.ps_requests = Gauge("psrec_ps_requests_total", "requests served by a PS", ["ps"], registry=r)
        self.ps_rows = Gauge("psrec_ps_rows", "embedding rows held by a PS", ["ps"], registry=r)
        self._ar = None  # the dense all-reduce's gauges, made on first use (hybrid and collective jobs)
        self.port = None
        self._server = None
        if port >= 0:
            self.port = port or free_port()
            self._server, _ = start_http_server(self.port, addr=addr, registry=r)

    def worker(self, w: int, phases: dict[str, float], rows: int, sent: int, received: int) -> None:
        """Cumulative figures of worker `w`."""
        for p, v in phases.items():
            self.phase.labels(str(w), p).set(v)
        self.samples.labels(str(w)).set(rows)
        self.bytes.labels(str(w), "sent").set(sent)
        self.bytes.labels(str(w), "received").set(received)
        total = sum(phases.values())
        comm = sum(phases.get(k, 0) for k in ("pull", "push", "allreduce", "alltoall"))
        self.comm.labels(str(w)).set(comm / total if total else 0.0)

    def dense_exchange(self, w: int, total: float, hidden: float) -> None:
        """Worker `w`'s dense all-reduce: seconds in flight (exposed + hidden) and hidden behind backward."""
        if self._ar is None:
            r = self.registry
            self._ar = (Gauge("psrec_worker_allreduce_total_seconds", "dense all-reduce in flight (exposed + hidden)",
                              ["worker"], registry=r),
                        Gauge("psrec_worker_allreduce_hidden_seconds", "dense all-reduce hidden behind backward",
                              ["worker"], registry=r))
        self._ar[0].labels(str(w)).set(total)
        self._ar[1].labels(str(w)).set(hidden)

    def shard(self, s: int, bytes_served: int, requests: int, rows: int) -> None:
        self.ps_bytes.labels(str(s)).set(bytes_served)
        self.ps_requests.labels(str(s)).set(requests)
        self.ps_rows.labels(str(s)).set(rows)

    def scrape(self) -> str:
        """The exposition text a scrape of the endpoint would return now."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
