"""`psrec validate-sim --address ADDR`: the simulator validated on a multi-node testbed
(`psrec cluster up`), real packets on tc-shaped links.

For each bandwidth (`--bandwidths`, default the testbed's own and 200Mbit; the links are
re-shaped in place, Ray stays up) and each configuration (`TESTBED_RUNS`: PS async, PS sync,
hybrid and collective with 3 workers and 1 PS):
1. the job on the testbed, its actors spread over the nodes (`ps.placement = "spread"`), while
   this process samples every node's link counters every 2 ms (`psrec.cluster.counters`);
2. the same job on one node (a local Ray) with `--net bandwidth=B`, which adds the computed
   transfer time per call instead of shaping packets; PS jobs on gRPC in both (`TESTBED_RUNS`).
Then a calibration is fitted (`psrec calibrate`'s fit) on the one-node runs only, and every
testbed run is predicted from it plus the link's parameters (a real network: `emulated=False`),
with the error figures of `psrec validate-sim` (`psrec.sim.validate.summarize`).

Every job is its own `psrec train` process: joining a testbed moves the driver into the head's
network namespace (`psrec.cluster.testbed.join`), which a process does once. Figures are steady
state (`train.warmup_steps` left out, as the runs do). `nic_util` = the PS node's send rate
while it sends, its bursts' partial edge intervals left out (`psrec.cluster.counters.interior_rate`),
over the shaped rate; `links` also keep the rate with the edges (`busy_rate`). Needs root.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["TESTBED_RUNS", "TestbedRun", "TestbedValidation", "validate_testbed", "summary_line"]

# The PS jobs use gRPC on both sides: across nodes `ps.transport = "auto"` takes gRPC, but on one
# node the same-node channel, whose software cost is not the one the testbed pays (async, 3
# workers, 1 PS, 1 Gbit, one node: 108 ms a step on the channel, 170 ms on gRPC; the testbed
# 196 ms). A calibration from one-node runs must see the code path the testbed runs.
_PS = ["--mode", "ps", "--workers", "3", "--ps", "1", "--set", 'ps.transport="grpc"']
TESTBED_RUNS: dict[str, tuple[str, int, int, list[str]]] = {  # name -> (sim mode, workers, PS, train flags)
    "async-w3-ps1": ("ps-async", 3, 1, _PS),
    "sync-w3-ps1": ("ps-sync", 3, 1, [*_PS, "--sync"]),
    "hybrid-w3-ps1": ("hybrid", 3, 1, [*_PS, "--dense", "allreduce"]),
    "coll-w3": ("collective", 3, 1, ["--mode", "collective", "--workers", "3"]),
}
DEFAULT_BANDWIDTHS = ("", "200Mbit")  # "" = the testbed's own rate
TRAIN_TIMEOUT_S = 1200.0


@dataclass
class TestbedRun:
    """One configuration at one bandwidth: its testbed and one-node run directories and the
    links' busy rates during the testbed job ({"ps0": {...}, "workers1": {...}})."""

    __test__ = False  # not a pytest class, despite the name
    name: str
    bandwidth: str
    mode: str
    workers: int
    ps: int
    testbed: Path
    one_node: Path
    links: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.bandwidth}"


@dataclass
class TestbedValidation:
    """What `validate_testbed` measured and predicted."""

    __test__ = False
    nodes: int
    runs: list[TestbedRun]
    predictions: list[Any]
    summary: Any
    nic_util: dict[str, float]
    # the PS node's receive rate while it receives (the pushes), over the shaped rate
    nic_rx_util: dict[str, float] = field(default_factory=dict)

    @property
    def headline_nic_util(self) -> float:
        """nic_util of the PS-sync job at the first bandwidth (3 workers pulling from 1 PS at
        once), else the largest measured."""
        first = self.runs[0].bandwidth if self.runs else ""
        return self.nic_util.get(f"sync-w3-ps1@{first}", max(self.nic_util.values(), default=float("nan")))


def train_job(flags: list[str], out: Path, steps: int, workers: int, batch: int, extra: list[str]) -> Path:
    """One `psrec train` in its own process (its own Ray driver); returns its run directory."""
    out.mkdir(parents=True, exist_ok=True)
    sets = [f"data.batch_size={batch}", f"data.train_rows={steps * workers * batch}", "data.eval_rows=2048",
            "train.progress=false", "ps.metrics_port=-1", "collective.metrics_port=-1", f"run.dir={out}",
            "run.save_model=false", *extra]
    cmd = [sys.executable, "-m", "psrec.cli", "train", *flags, *[a for s in sets for a in ("--set", s)]]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=TRAIN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"psrec train {' '.join(flags)} ran past {TRAIN_TIMEOUT_S:.0f} s (run dir {out})") from None
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"psrec train {' '.join(flags)} failed: {last}")
    runs = [p for p in out.iterdir() if (p / "results.json").is_file()]
    if len(runs) != 1:
        raise RuntimeError(f"{out}: expected one run with results.json, found {len(runs)}")
    return runs[0]


def _testbed_job(st, flags, out: Path, workers: int, steps: int, batch: int, extra: list[str]):
    from psrec.cluster.counters import LinkSampler, busy_rate, interior_rate

    sampler = LinkSampler([n.host_if for n in st.nodes]).start()
    try:
        run = train_job([*flags, "--address", st.address], out, steps, workers, batch, extra)
    finally:
        sampler.stop()
    res = json.loads((run / "results.json").read_text())
    rate = st.cfg.rate_bytes_per_s
    links = {}
    for role in ("ps", "workers"):
        for k, a in enumerate((res.get("actor_nodes") or {}).get(role) or []):
            node = st.node_of_ip(a["ip"])
            samples = sampler.node(node.index)
            bps, secs, nbytes = busy_rate(samples, rate)
            links[f"{role}{k}"] = {"node": node.index, "busy_Bps": bps, "busy_s": secs, "busy_bytes": nbytes,
                                   "interior_Bps": interior_rate(samples, rate)[0],
                                   # what the node took in while busy receiving (a PS: the pushes)
                                   "rx_interior_Bps": interior_rate(sampler.node_received(node.index), rate)[0]}
    return run, links


def predict_runs(runs: list[TestbedRun], cores: float):
    """Fit on the one-node runs, predict the testbed runs: (predictions, summary)."""
    from psrec.commands.simulate.spec import spec_from_config
    from psrec.commands.validate_sim import _fill_sync_apply, _fit
    from psrec.config import load_config
    from psrec.sim.results_map import load_run
    from psrec.sim.validate import Prediction, predict, summarize

    def mapped_and_spec(run: Path, r: TestbedRun, emulated: bool):
        cfg = load_config(run / "config.toml")
        spec = spec_from_config(cfg, mode=r.mode, workers=r.workers, ps=r.ps, batch_size=cfg.data.batch_size,
                                net=f"bandwidth={r.bandwidth}", cores=cores, emulated=emulated,
                                per_mode_compute=True)
        return _fill_sync_apply(load_run(run / "results.json", cores), spec), spec

    cal = _fit([mapped_and_spec(r.one_node, r, True)[0] for r in runs])
    preds = []
    for r in runs:
        mapped, spec = mapped_and_spec(r.testbed, r, False)
        cost = predict(spec, r.mode, cal)
        meas = mapped["measured"]
        preds.append(Prediction(r.label, r.mode, float(meas["step"]), cost.total, float(meas["comm_fraction"]),
                                cost.comm_fraction, cost, cal))
    return preds, summarize(preds, [r.bandwidth for r in runs])


def validate_testbed(address: str, out: Path, configs: list[str] | None = None,
                     bandwidths: list[str] | None = None, steps: int = 20, batch: int = 2048,
                     extra: list[str] | None = None, log=print) -> TestbedValidation:
    """Train `configs` (names of `TESTBED_RUNS`) at each of `bandwidths` on the testbed whose head
    is at `address` and on one node, then predict the testbed runs (module doc). The links are
    left at the last bandwidth's rate."""
    from psrec.cluster.config import TestbedError
    from psrec.cluster.testbed import find_by_address, reshape

    st = find_by_address(address)
    if st is None:
        raise TestbedError(f"{address} is not the head of a testbed this machine runs (`psrec cluster status`)")
    names = list(configs or TESTBED_RUNS)
    unknown = [n for n in names if n not in TESTBED_RUNS]
    if unknown:
        raise ValueError(f"unknown testbed configuration(s) {', '.join(unknown)}; known: {', '.join(TESTBED_RUNS)}")
    bands = [b or st.cfg.bandwidth for b in (bandwidths or DEFAULT_BANDWIDTHS)]
    extra = list(extra or [])
    runs: list[TestbedRun] = []
    nic: dict[str, float] = {}
    nic_rx: dict[str, float] = {}
    for b in bands:
        st = reshape(st.name, b)
        for n in names:
            mode, w, p, flags = TESTBED_RUNS[n]
            tb, links = _testbed_job(st, flags, out / f"{n}-{b}-testbed", w, steps, batch, extra)
            one = train_job(flags, out / f"{n}-{b}-onenode", steps, w, batch,
                            [*extra, f'ps.net="bandwidth={b}"', f'collective.net="bandwidth={b}"'])
            r = TestbedRun(n, b, mode, w, p, tb, one, links)
            runs.append(r)
            if "ps0" in links:
                nic[r.label] = links["ps0"]["interior_Bps"] / st.cfg.rate_bytes_per_s
                nic_rx[r.label] = links["ps0"]["rx_interior_Bps"] / st.cfg.rate_bytes_per_s
            log(_job_line(r))
    preds, summary = predict_runs(runs, float(os.cpu_count() or 1))
    (out / "runs.json").write_text(json.dumps({
        "address": address, "nodes": st.cfg.nodes,
        "runs": [{"name": r.name, "bandwidth": r.bandwidth, "mode": r.mode, "workers": r.workers, "ps": r.ps,
                  "testbed": str(r.testbed), "one_node": str(r.one_node), "links": r.links} for r in runs],
        "nic_util": nic, "nic_rx_util": nic_rx, "predictions": [p.as_row() for p in preds]}, indent=1,
        default=float) + "\n")
    return TestbedValidation(st.cfg.nodes, runs, preds, summary, nic, nic_rx)


def _job_line(r: TestbedRun) -> str:
    rt, ro = (json.loads((d / "results.json").read_text()) for d in (r.testbed, r.one_node))
    tb_step = statistics.median(x["step_p50"] for x in rt["per_worker"])
    one_step = statistics.median(x["emulated_step_p50"] for x in ro["per_worker"])
    busy = ", ".join(f"{k}@n{v['node']} {v['busy_Bps'] / 1e6:.1f} MB/s x {v['busy_s']:.2f} s"
                     for k, v in r.links.items())
    return (f"{r.label}: testbed step {1e3 * tb_step:.1f} ms comm {100 * rt['comm_fraction']:.1f}% | one node + "
            f"--net step {1e3 * one_step:.1f} ms comm {100 * ro['emulated_comm_fraction']:.1f}% | links busy: {busy}")


def prediction_lines(v: TestbedValidation) -> list[str]:
    return [f"sim {p.name}: measured {1e3 * p.measured_step:.1f} ms comm {100 * p.measured_comm:.1f}% | predicted "
            f"{1e3 * p.predicted_step:.1f} ms comm {100 * p.predicted_comm:.1f}% | step err {100 * p.step_err:+.1f}% "
            f"comm err {p.comm_err_pts:+.1f} pts" for p in v.predictions]


def summary_line(v: TestbedValidation) -> str:
    s = v.summary
    return (f"testbed_nodes={v.nodes} median_step_err={s.median_step_err:.3f} "
            f"max_commfrac_err_pts={s.max_commfrac_err_pts:.2f} ranking_preserved={int(s.ranking_preserved)} "
            f"nic_util={v.headline_nic_util:.3f}")
