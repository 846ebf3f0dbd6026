"""Prometheus metrics of training jobs, served over HTTP by the driver.

Workers and servers report to the driver (it polls them); the driver owns one registry and
one HTTP endpoint, so a scrape sees the whole job, and `serving()` shares one endpoint among
the runs of a `psrec compare` (each run's series carry its `run_id` and `mode`). Every series
has the labels `run_id`, `mode` and `node`; worker series add `worker`, PS series `ps`:

    psrec_worker_phase_seconds_total{worker, phase}   counter   seconds per step phase (psrec.core.step.PHASES)
    psrec_samples_total{worker}                       counter   rows trained
    psrec_steps_total{worker}                         counter   steps trained
    psrec_step_seconds{worker}                        histogram one step's seconds (all phases)
    psrec_bytes_total{worker, ps, direction, kind}    counter   payload bytes; kind="worker" (sent/received by
                                                                a worker) or "ps" (received/sent by a PS shard)
    psrec_worker_allreduce_seconds_total{worker}      counter   dense all-reduce in flight (exposed + hidden)
    psrec_worker_allreduce_hidden_seconds_total       counter   the part hidden behind backward
    psrec_straggler_seconds_total{worker}             counter   injected slowdown (after the run)
    psrec_ps_rows{ps}                                 gauge     embedding rows a shard holds
    psrec_ps_requests_total{ps}                       counter   calls a shard served
    psrec_ps_apply_seconds_total{ps}, psrec_ps_pull_seconds_total{ps}   counter   a shard's seconds in them
    psrec_ps_imbalance{what}                          gauge     max/mean over shards of rows, bytes, requests
    psrec_shard_rows{rank}, psrec_shard_bytes_served_total{rank}        collective ranks' shards
    psrec_queue_depth, psrec_queue_leases             gauge     the work queue's waiting and leased tasks

Counters are fed from cumulative snapshots as deltas (a snapshot below the last one adds
nothing), so they stay monotonic whatever order polls and final reports arrive in.
"""
from __future__ import annotations

import contextlib
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

__all__ = ["JobMetrics", "MetricsEndpoint", "serving", "free_port", "STEP_BUCKETS", "METRIC_NAMES"]

# 0.5 ms .. 16 s in factors of 2: a CTR step is a few ms locally, up to seconds on a slow network
STEP_BUCKETS = tuple(0.0005 * 2 ** k for k in range(16))
RUN = ["run_id", "mode", "node"]
COMM = ("pull", "push", "allreduce", "alltoall")


def free_port(addr: str = "127.0.0.1") -> int:
    """A TCP port that is free on this host right now."""
    with socket.socket() as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


class _Families:
    """The metric families, registered once per registry (one endpoint, several runs)."""

    def __init__(self, r: CollectorRegistry) -> None:
        W = [*RUN, "worker"]  # noqa: N806 - label lists, read as constants
        P = [*RUN, "ps"]  # noqa: N806
        self.phase = Counter("psrec_worker_phase_seconds", "seconds per step phase", [*W, "phase"], registry=r)
        self.samples = Counter("psrec_samples", "rows trained", W, registry=r)
        self.steps = Counter("psrec_steps", "steps trained", W, registry=r)
        self.step = Histogram("psrec_step_seconds", "one step's seconds, all phases", W, buckets=STEP_BUCKETS,
                              registry=r)
        self.bytes = Counter("psrec_bytes", "payload bytes (kind: worker or ps)", [*RUN, "worker", "ps", "direction",
                                                                                  "kind"], registry=r)
        self.ar_total = Counter("psrec_worker_allreduce_seconds", "dense all-reduce in flight (exposed + hidden)", W,
                                registry=r)
        self.ar_hidden = Counter("psrec_worker_allreduce_hidden_seconds", "dense all-reduce hidden behind backward",
                                 W, registry=r)
        self.straggler = Counter("psrec_straggler_seconds", "injected straggler slowdown", W, registry=r)
        self.slowness = Gauge("psrec_worker_slowness", "median worker's rows per busy second over this worker's, "
                              "since the last report (1 = typical; 4 = four times slower)", W, registry=r)
        self.ps_rows = Gauge("psrec_ps_rows", "embedding rows held by a PS shard", P, registry=r)
        self.ps_requests = Counter("psrec_ps_requests", "requests served by a PS shard", P, registry=r)
        self.ps_apply = Counter("psrec_ps_apply_seconds", "seconds a PS shard spent applying pushes", P, registry=r)
        self.ps_pull = Counter("psrec_ps_pull_seconds", "seconds a PS shard spent serving pulls", P, registry=r)
        self.ps_imbalance = Gauge("psrec_ps_imbalance", "max/mean over PS shards (1 = even)", ["run_id", "mode",
                                                                                              "what"], registry=r)
        self.shard_rows = Gauge("psrec_shard_rows", "embedding rows held by a collective rank's shard",
                                [*RUN, "rank"], registry=r)
        self.shard_bytes = Counter("psrec_shard_bytes_served", "row bytes a collective rank's shard sent to others",
                                   [*RUN, "rank"], registry=r)
        self.queue_depth = Gauge("psrec_queue_depth", "work-queue tasks waiting to be taken", ["run_id", "mode"],
                                 registry=r)
        self.queue_leases = Gauge("psrec_queue_leases", "work-queue tasks leased to workers now", ["run_id", "mode"],
                                  registry=r)


def _exported_names() -> tuple[str, ...]:
    """Every sample name psrec exports (counters with `_total`, histograms with their parts)."""
    out = []
    for c in _Families(CollectorRegistry()).__dict__.values():
        for fam in c.describe():
            out += [s for s in {fam.name + suffix for suffix in _SUFFIXES[fam.type]}]
    return tuple(sorted(out))


_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
METRIC_NAMES = _exported_names()  # what a query against psrec's endpoint may name (the dashboard test reads it)


class MetricsEndpoint:
    """One registry and its HTTP endpoint.

    Args:
        port: serve on this port; 0 picks a free one; -1 serves nothing (values still kept).
        addr: the address to bind (0.0.0.0: scrapeable from other hosts).
    """

    def __init__(self, port: int = 0, addr: str = "127.0.0.1") -> None:
        self.registry = CollectorRegistry()
        self.families = _Families(self.registry)
        self.addr, self.port, self._server = addr, None, None
        if port >= 0:
            self.port = port or free_port(addr)
            self._server, _ = start_http_server(self.port, addr=addr, registry=self.registry)

    @property
    def url(self) -> str | None:
        return None if self.port is None else f"http://{self.addr}:{self.port}/metrics"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


_shared: list[MetricsEndpoint] = []  # the endpoint `serving()` opened, innermost last


@contextlib.contextmanager
def serving(port: int = 0, addr: str = "127.0.0.1") -> Iterator[MetricsEndpoint | None]:
    """One endpoint for every `JobMetrics` made inside (the runs of `psrec compare`); port -1: none."""
    if port < 0:
        yield None
        return
    ep = MetricsEndpoint(port, addr)
    _shared.append(ep)
    try:
        yield ep
    finally:
        _shared.remove(ep)
        ep.close()


class JobMetrics:
    """The series of one run, labelled `run_id` and `mode`.

    Args:
        port: serve on this port; 0 picks a free one; -1 serves nothing (values still kept).
            Inside `serving()` the shared endpoint is used instead (unless -1).
        addr: the address to bind.
        run_id, mode: the run's labels.

    Example:
        >>> m = JobMetrics(-1, run_id="r1", mode="ps-async")
        >>> m.worker(0, {"compute": 0.5}, rows=64, sent=10, received=20, steps=2)
        >>> m.worker(0, {"compute": 0.4}, rows=64, sent=10, received=20, steps=2)  # lower: adds nothing
        >>> m.value("psrec_worker_phase_seconds_total", worker="0", phase="compute")
        0.5
    """

    def __init__(self, port: int = 0, addr: str = "127.0.0.1", run_id: str = "", mode: str = "") -> None:
        self._own = not (_shared and port >= 0)
        self.endpoint = MetricsEndpoint(port, addr) if self._own else _shared[-1]
        self.registry = self.endpoint.registry
        self.f = self.endpoint.families
        self.run_id, self.mode = run_id, mode
        self.node = socket.gethostname()  # the driver's; Ray workers and PS name their own
        self._last: dict[tuple, float] = {}  # (family, labels) -> the cumulative value fed so far
        self._nodes: dict[tuple[str, int], str] = {}  # ("worker" | "ps", index) -> its node label
        self._observed: dict[int, tuple[int, float]] = {}  # worker -> (steps observed, their seconds)
        self._busy_mark: dict[int, tuple[int, float]] = {}  # worker -> (rows, busy seconds) at its last speed
        self._speed: dict[int, float] = {}  # worker -> rows per busy second between its last two reports
        self._watch: tuple[threading.Thread, threading.Event] | None = None
        self.history: list[tuple[float, list[dict]]] = []  # (time.time(), PS stats) of every live poll

    @property
    def port(self) -> int | None:
        return self.endpoint.port

    @property
    def url(self) -> str | None:
        return self.endpoint.url

    # ------------------------------------------------------------------------- feeding
    def _inc(self, counter, labels: tuple, value: float) -> None:
        """Feed cumulative `value` as its delta: counters only go up."""
        key = (id(counter), labels)
        delta = value - self._last.get(key, 0.0)
        if delta > 0:
            counter.labels(*labels).inc(delta)
            self._last[key] = value
        else:
            counter.labels(*labels)  # the series exists from the first report on

    def _w(self, w: int, node: str | None) -> tuple[str, ...]:
        # a worker keeps the node its first report named: one series per worker, whoever reports
        node = self._nodes.setdefault(("worker", w), node or self.node)
        return self.run_id, self.mode, node, str(w)

    def worker(self, w: int, phases: dict[str, float], rows: int, sent: int, received: int, steps: int = 0,
               node: str | None = None) -> None:
        """Cumulative figures of worker `w` (seconds, rows, bytes, steps). New steps are observed
        in the step histogram at their mean: a poll carries totals only (`steps` sets them exact)."""
        lab = self._w(w, node)
        for p, v in phases.items():
            self._inc(self.f.phase, (*lab, p), v)
        self._inc(self.f.samples, lab, rows)
        self._inc(self.f.steps, lab, steps)
        run, mode, nd, wk = lab
        self._inc(self.f.bytes, (run, mode, nd, wk, "", "sent", "worker"), sent)
        self._inc(self.f.bytes, (run, mode, nd, wk, "", "received", "worker"), received)
        seen, seen_s = self._observed.get(w, (0, 0.0))
        total = sum(phases.values())
        if steps > seen and total > seen_s:
            mean = (total - seen_s) / (steps - seen)
            for _ in range(steps - seen):
                self.f.step.labels(*lab).observe(mean)
            self._observed[w] = (steps, total)
        self._slowness(w, rows, phases)

    def _slowness(self, w: int, rows: int, phases: dict[str, float]) -> None:
        """Live slow-worker signal: each worker's speed (rows per busy second, busy = data +
        lookup + compute as in `psrec.core.slow_workers`) since its last report, against the
        median worker's (after the run, `results.json` has the full per-step detection)."""
        busy = sum(phases.get(p, 0.0) for p in ("data", "lookup", "compute"))
        r0, b0 = self._busy_mark.get(w, (0, 0.0))
        if rows > r0 and busy > b0:
            self._speed[w] = (rows - r0) / (busy - b0)
            self._busy_mark[w] = (rows, busy)
        if len(self._speed) >= 2:
            med = statistics.median(self._speed.values())
            for v, s in self._speed.items():
                self.f.slowness.labels(*self._w(v, None)).set(med / s)

    def steps(self, w: int, seconds: Sequence[float], node: str | None = None) -> None:
        """Every step's seconds of worker `w` (after the run): those not yet observed go into the histogram."""
        seen, seen_s = self._observed.get(w, (0, 0.0))
        for s in seconds[seen:]:
            self.f.step.labels(*self._w(w, node)).observe(s)
        self._observed[w] = (max(seen, len(seconds)), seen_s + float(sum(seconds[seen:])))

    def final(self, summaries: Sequence[dict[str, Any]]) -> None:
        """Every worker's summary after the run (`WorkerReport.summary`): totals, each step's seconds,
        the dense all-reduce and injected straggler time."""
        for s in summaries:
            if not s.get("steps"):
                continue
            w = s["worker"]
            self.worker(w, s["phases"], s["rows"], s["bytes_sent"], s["bytes_received"])
            self.steps(w, [sum(ph.values()) for ph in s["step_seconds"]])
            self._inc(self.f.steps, self._w(w, None), s["steps"])
            if s["allreduce_total_seconds"] > 0:
                self.dense_exchange(w, s["allreduce_total_seconds"], s["allreduce_hidden_seconds"])
            self.straggler(w, s.get("straggler_seconds", 0.0))

    def dense_exchange(self, w: int, total: float, hidden: float, node: str | None = None) -> None:
        """Worker `w`'s dense all-reduce so far: seconds in flight (exposed + hidden) and hidden behind backward."""
        self._inc(self.f.ar_total, self._w(w, node), total)
        self._inc(self.f.ar_hidden, self._w(w, node), hidden)

    def straggler(self, w: int, seconds: float, node: str | None = None) -> None:
        self._inc(self.f.straggler, self._w(w, node), seconds)

    def shard(self, s: int, bytes_served: int, requests: int, rows: int, bytes_in: int = 0, apply_s: float = 0.0,
              pull_s: float = 0.0, node: str | None = None) -> None:
        """Cumulative figures of PS shard `s` (bytes, requests, seconds) and the rows it holds now."""
        lab = (self.run_id, self.mode, self._nodes.setdefault(("ps", s), node or self.node), str(s))
        self.f.ps_rows.labels(*lab).set(rows)
        self._inc(self.f.ps_requests, lab, requests)
        self._inc(self.f.ps_apply, lab, apply_s)
        self._inc(self.f.ps_pull, lab, pull_s)
        run, mode, nd, ps = lab
        self._inc(self.f.bytes, (run, mode, nd, "", ps, "sent", "ps"), bytes_served)
        self._inc(self.f.bytes, (run, mode, nd, "", ps, "received", "ps"), bytes_in)

    def shards(self, stats: Sequence[dict], nodes: Sequence[str] | None = None) -> None:
        """Every PS shard's `ShardStats` (as mappings) and their imbalance (max/mean)."""
        for i, st in enumerate(stats):
            self.shard(st["shard"], st["bytes_out"], st["requests"], sum(st["rows"].values()), st["bytes_in"],
                       st["apply_seconds"], st["pull_seconds"], nodes[i] if nodes else None)
        for what, vals in (("rows", [sum(s["rows"].values()) for s in stats]),
                           ("bytes_served", [s["bytes_out"] for s in stats]),
                           ("requests", [s["requests"] for s in stats])):
            mean = sum(vals) / len(vals) if vals else 0.0
            self.f.ps_imbalance.labels(self.run_id, self.mode, what).set(max(vals) / mean if mean else 1.0)

    def collective_shard(self, rank: int, rows: int, bytes_served: int) -> None:
        lab = (self.run_id, self.mode, self.node, str(rank))
        self.f.shard_rows.labels(*lab).set(rows)
        self._inc(self.f.shard_bytes, lab, bytes_served)

    def queue(self, depth: int, leases: int) -> None:
        self.f.queue_depth.labels(self.run_id, self.mode).set(depth)
        self.f.queue_leases.labels(self.run_id, self.mode).set(leases)

    def live(self, snap: dict[str, Any]) -> None:
        """One poll of the job's servers: {"ps": [ShardStats mappings], "ps_nodes": [...], "queue": {depth, leases}}."""
        if snap.get("ps"):
            self.shards(snap["ps"], snap.get("ps_nodes"))
            self.history.append((time.time(), snap["ps"]))
        if snap.get("queue"):
            self.queue(snap["queue"]["depth"], snap["queue"]["leases"])

    # ------------------------------------------------------------------------- polling
    def watch(self, poll: Callable[[], dict[str, Any]], every_s: float = 1.0) -> None:
        """Call `poll()` every `every_s` seconds on a thread and feed `live()` until `unwatch()`.
        A failing poll is skipped (the job itself reports its failures)."""
        self.unwatch()
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(every_s):
                try:
                    self.live(poll())
                except Exception:  # noqa: BLE001 - a shard busy or going away; the next poll retries
                    continue

        t = threading.Thread(target=loop, name="psrec-metrics-poll", daemon=True)
        t.start()
        self._watch = (t, stop)

    def unwatch(self, timeout_s: float = 30.0) -> None:
        """Stop the poller; waits for a poll in flight at most `timeout_s` seconds."""
        if self._watch is not None:
            t, stop = self._watch
            stop.set()
            t.join(timeout_s)
            self._watch = None

    # ------------------------------------------------------------------------- reading
    def scrape(self) -> str:
        """The exposition text a scrape of the endpoint would return now."""
        return generate_latest(self.registry).decode()

    def value(self, name: str, **labels: str) -> float | None:
        """One sample of this run (labels beyond run_id/mode as given), or None."""
        want = {"run_id": self.run_id, "mode": self.mode, **labels}
        for fam in self.registry.collect():
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in want.items()):
                    return s.value
        return None

    def close(self) -> None:
        """Stop polling; close the endpoint if this run owns it (not a shared one)."""
        self.unwatch()
        if self._own:
            self.endpoint.close()


def actor_nodes(actors: Sequence[Any]) -> list[str]:
    """The node address of each Ray actor ('' where Ray does not say): labels, read from the GCS."""
    try:
        from ray._private.state import state  # the GCS actor table; the public state API needs the dashboard

        out = []
        for a in actors:
            info = state.actor_table(a._actor_id.hex()) or {}
            out.append(str(info.get("Address", {}).get("IPAddress", "")))
        return out
    except Exception:  # noqa: BLE001 - a label only: never fail a job over it
        return [""] * len(actors)
