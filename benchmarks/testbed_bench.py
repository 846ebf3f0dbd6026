"""The multi-node testbed, measured and predicted: real packets on tc-shaped links, against
psrec's computed network on one node and against the simulator.

1. `psrec cluster up --nodes N --bandwidth B0` (timed: the start-up target is < 60 s).
2. `psrec validate-sim --address ...`'s work (`psrec.commands.validate_sim.testbed`): for each
   bandwidth (default 1Gbit and 200Mbit; the links are re-shaped in place, Ray stays up) and
   each configuration (PS async, PS sync, hybrid with 3 workers and 1 PS, collective with 3
   ranks), the job on the testbed with its actors spread over the nodes while this process
   samples every node's link counters, then the same job on one node with `--net bandwidth=B`;
   a calibration fitted on the one-node runs only predicts each testbed run.
3. `psrec cluster down`.

Every figure is steady state: `train.warmup_steps` (2) warm-up steps per worker are left out
(the runs' own rule; the simulator's mapping also drops steps past twice the median). `nic_util`
= the PS node's send rate while it sends (its bursts answering the step's pulls, from the
interface counters, each burst's partial first and last 2-ms interval left out) over the
shaped rate, in the PS-sync job at the first bandwidth (where 3 workers pull from 1 PS at
once: the PS link is the bottleneck). Needs root. The last line:
`testbed_nodes=N median_step_err=R max_commfrac_err_pts=R ranking_preserved=0|1 nic_util=R`.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from psrec.cluster import TestbedConfig, down, load_state, up
from psrec.commands.validate_sim.testbed import TESTBED_RUNS, prediction_lines, summary_line, validate_testbed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--bandwidths", default="1Gbit,200Mbit", help="comma list; the first sets nic_util")
    ap.add_argument("--steps", type=int, default=20, help="steps per worker (the first 2 are warm-up)")
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--configs", default=",".join(TESTBED_RUNS), help=f"comma list of {', '.join(TESTBED_RUNS)}")
    ap.add_argument("--keep", action="store_true", help="leave the testbed up (and reuse one that is up)")
    ap.add_argument("--out", default="runs/testbed_bench")
    args = ap.parse_args()
    out = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True)
    bands = [b.strip() for b in args.bandwidths.split(",") if b.strip()]
    cfg = TestbedConfig(nodes=args.nodes, bandwidth=bands[0], name="bench", subnet=201)
    st = load_state(cfg.name) if args.keep else None
    if st is None or not st.complete:
        st = up(cfg)
        print(f"testbed up: {st.cfg.nodes} nodes in {st.up_seconds:.1f} s, address {st.address}", flush=True)
    try:
        v = validate_testbed(st.address, out, [n.strip() for n in args.configs.split(",") if n.strip()], bands,
                             steps=args.steps, batch=args.batch, log=lambda m: print(m, flush=True))
    finally:
        if not args.keep:
            down(cfg.name)
    print("\n".join(prediction_lines(v)))
    print("nic_util per job: " + ", ".join(f"{k} {u:.3f}" for k, u in v.nic_util.items()))
    print("PS receive rate while receiving (pushes), over the shaped rate: "
          + ", ".join(f"{k} {u:.3f}" for k, u in v.nic_rx_util.items()))
    print(summary_line(v))


if __name__ == "__main__":
    main()
