"""The multi-node testbed, measured and predicted: real packets on tc-shaped links, against
psrec's computed network on one node and against the simulator.

1. `psrec cluster up --nodes N --bandwidth B0` (timed: the start-up target is < 60 s).
2. For each bandwidth (default 1Gbit and 200Mbit; the links are re-shaped in place, Ray stays
   up) and each configuration (PS async and PS sync with 3 workers and 1 PS, collective with 3
   ranks): the job on the testbed, actors spread over the nodes (`ps.placement = "spread"`),
   while this process samples every node's link counters every 2 ms
   (`psrec.cluster.counters`); then the same job on one node (a local Ray) with `--net
   bandwidth=B`, which adds the computed transfer time per call instead of shaping packets.
3. `psrec cluster down`.
4. The simulator: a calibration fitted (`psrec calibrate`'s fit) on the one-node runs only,
   then each testbed run predicted from it plus the link's parameters (a real network:
   `emulated=False`); the error figures of `psrec validate-sim` (`psrec.sim.validate`).

Every figure is steady state: `train.warmup_steps` (2) warm-up steps per worker are left out
(the runs' own rule; the simulator's mapping also drops steps past twice the median). `nic_util`
= the PS node's send rate while it sends (its bursts answering the step's pulls, from the
interface counters) over the shaped rate, in the PS-sync job at the first bandwidth (where
3 workers pull from 1 PS at once: the PS link is the bottleneck). Needs root. The last line:
`testbed_nodes=N median_step_err=R max_commfrac_err_pts=R ranking_preserved=0|1 nic_util=R`.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from psrec.cluster import TestbedConfig, down, load_state, up
from psrec.cluster.counters import LinkSampler, busy_rate
from psrec.cluster.testbed import reshape

CONFIGS = {  # name -> (simulator mode, workers, PS, psrec train flags)
    "async-w3-ps1": ("ps-async", 3, 1, ["--mode", "ps", "--workers", "3", "--ps", "1"]),
    "sync-w3-ps1": ("ps-sync", 3, 1, ["--mode", "ps", "--sync", "--workers", "3", "--ps", "1"]),
    "coll-w3": ("collective", 3, 1, ["--mode", "collective", "--workers", "3"]),
}


def _train(flags: list[str], out: Path, steps: int, workers: int, batch: int, extra: list[str]) -> Path:
    """One `psrec train` in its own process (its own Ray driver); returns its run directory."""
    out.mkdir(parents=True, exist_ok=True)
    sets = [f"data.batch_size={batch}", f"data.train_rows={steps * workers * batch}", "data.eval_rows=2048",
            "train.progress=false", "ps.metrics_port=-1", "collective.metrics_port=-1", f"run.dir={out}",
            "run.save_model=false", *extra]
    cmd = [sys.executable, "-m", "psrec.cli", "train", *flags, *[a for s in sets for a in ("--set", s)]]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.strip().splitlines()[-3:]}")
    (run,) = [p for p in out.iterdir() if (p / "results.json").is_file()]
    return run


def _testbed_job(st, flags, out, workers, args) -> tuple[Path, dict]:
    sampler = LinkSampler([n.host_if for n in st.nodes]).start()
    try:
        run = _train([*flags, "--address", st.address], out, args.steps, workers, args.batch, [])
    finally:
        sampler.stop()
    res = json.loads((run / "results.json").read_text())
    rate = st.cfg.rate_bytes_per_s
    nodes = res.get("actor_nodes") or {}
    links = {}
    for role in ("ps", "workers"):
        for k, a in enumerate(nodes.get(role) or []):
            node = st.node_of_ip(a["ip"])
            bps, secs, nbytes = busy_rate(sampler.node(node.index), rate)
            links[f"{role}{k}"] = {"node": node.index, "busy_Bps": bps, "busy_s": secs, "busy_bytes": nbytes}
    return run, links


def _predict(tb_runs, one_runs, cores: float):
    """Fit on the one-node runs, predict the testbed runs: (predictions, summary)."""
    from psrec.commands.simulate.spec import spec_from_config
    from psrec.commands.validate_sim import _fill_sync_apply, _fit
    from psrec.config import load_config
    from psrec.sim.results_map import load_run
    from psrec.sim.validate import Prediction, predict, summarize

    def mapped_and_spec(run: Path, mode, workers, ps, net, emulated):
        cfg = load_config(run / "config.toml")
        spec = spec_from_config(cfg, mode=mode, workers=workers, ps=ps, batch_size=cfg.data.batch_size, net=net,
                                cores=cores, emulated=emulated, per_mode_compute=True)
        return _fill_sync_apply(load_run(run / "results.json", cores), spec), spec

    cal = _fit([mapped_and_spec(r, m, w, p, f"bandwidth={b}", True)[0] for (_, b, m, w, p), r in one_runs])
    preds, groups = [], []
    for (name, b, m, w, p), r in tb_runs:
        mapped, spec = mapped_and_spec(r, m, w, p, f"bandwidth={b}", False)
        cost = predict(spec, m, cal)
        meas = mapped["measured"]
        preds.append(Prediction(f"{name}@{b}", m, float(meas["step"]), cost.total, float(meas["comm_fraction"]),
                                cost.comm_fraction, cost, cal))
        groups.append(b)
    return preds, summarize(preds, groups)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--bandwidths", default="1Gbit,200Mbit", help="comma list; the first sets nic_util")
    ap.add_argument("--steps", type=int, default=20, help="steps per worker (the first 2 are warm-up)")
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {', '.join(CONFIGS)}")
    ap.add_argument("--keep", action="store_true", help="leave the testbed up (and reuse one that is up)")
    ap.add_argument("--out", default="runs/testbed_bench")
    args = ap.parse_args()
    out = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    bands = [b.strip() for b in args.bandwidths.split(",") if b.strip()]
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    cfg = TestbedConfig(nodes=args.nodes, bandwidth=bands[0], name="bench", subnet=201)
    st = load_state(cfg.name) if args.keep else None
    if st is None or not st.complete:
        st = up(cfg)
        print(f"testbed up: {st.cfg.nodes} nodes in {st.up_seconds:.1f} s, address {st.address}", flush=True)
    tb_runs, one_runs, nic, rows = [], [], {}, []
    try:
        for b in bands:
            st = reshape(cfg.name, b)
            for n in names:
                mode, w, p, flags = CONFIGS[n]
                key = (n, b, mode, w, p)
                tb, links = _testbed_job(st, flags, out / f"{n}-{b}-testbed", w, args)
                one = _train(flags, out / f"{n}-{b}-onenode", args.steps, w, args.batch, [f'ps.net="bandwidth={b}"',
                             f'collective.net="bandwidth={b}"'])
                tb_runs.append((key, tb))
                one_runs.append((key, one))
                rt, ro = (json.loads((d / "results.json").read_text()) for d in (tb, one))
                ps_link = links.get("ps0")
                if ps_link:
                    nic[(n, b)] = ps_link["busy_Bps"] / st.cfg.rate_bytes_per_s
                rows.append((n, b, rt, ro, links))
                print(f"{n} @ {b}: testbed step {1e3 * statistics.median(x['step_p50'] for x in rt['per_worker']):.1f}"
                      f" ms comm {100 * rt['comm_fraction']:.1f}% | one node + --net step "
                      f"{1e3 * statistics.median(x['emulated_step_p50'] for x in ro['per_worker']):.1f} ms comm "
                      f"{100 * ro['emulated_comm_fraction']:.1f}% | links busy: " + ", ".join(
                          f"{k}@n{v['node']} {v['busy_Bps'] / 1e6:.1f} MB/s x {v['busy_s']:.2f} s"
                          for k, v in links.items()), flush=True)
    finally:
        if not args.keep:
            down(cfg.name)
    (out / "runs.json").write_text(json.dumps({"testbed": [[list(k), str(r)] for k, r in tb_runs],
                                               "one_node": [[list(k), str(r)] for k, r in one_runs],
                                               "nic_util": {f"{k[0]}@{k[1]}": v for k, v in nic.items()}}))
    preds, s = _predict(tb_runs, one_runs, float(os.cpu_count() or 1))
    for pr in preds:
        print(f"sim {pr.name}: measured {1e3 * pr.measured_step:.1f} ms comm {100 * pr.measured_comm:.1f}% | "
              f"predicted {1e3 * pr.predicted_step:.1f} ms comm {100 * pr.predicted_comm:.1f}% | step err "
              f"{100 * pr.step_err:+.1f}% comm err {pr.comm_err_pts:+.1f} pts")
    util = nic.get(("sync-w3-ps1", bands[0]), max(nic.values(), default=float("nan")))
    print("nic_util per job: " + ", ".join(f"{k[0]}@{k[1]} {v:.3f}" for k, v in nic.items()))
    print(f"testbed_nodes={cfg.nodes} median_step_err={s.median_step_err:.3f} "
          f"max_commfrac_err_pts={s.max_commfrac_err_pts:.2f} ranking_preserved={int(s.ranking_preserved)} "
          f"nic_util={util:.3f}")


if __name__ == "__main__":
    main()
