"""A local DeepFM step, phase by phase, on the raw-batch path (the local tables take the batch's
key draws: de-duplication, probe and gather in one compiled call per table, per-draw
gradients summed back by its inverse, `psrec.ev.raw`) against the distinct-key path (the
layer dedups with `psrec.ev.unique`, the tables look up the distinct keys, a compiled
expand scatters the rows to the draws and its backward sums them: what the PS and
collective stores take, and what local training ran before the raw path).

Two setups of the same config train the same batches in turns of `--turn` steps, each on
its own tables; the batches are read beforehand, so the data phase is out of the figures.
The first `--warmup` steps of each path are excluded (compile, first-touch allocation);
figures are medians over the remaining `--steps` per path. Phases as the step books them:
on the raw path the dedup is part of `lookup`, on the distinct path part of `compute`.

Usage: python benchmarks/local_step_bench.py [--steps N] [--batch B] [--fields F] [--threads T]
Last line: local_step_ms_raw=X local_step_ms_distinct=X raw_over_distinct=R (distinct / raw: > 1 is faster)
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from psrec.config import load_config  # noqa: E402
from psrec.core.local import build_local  # noqa: E402
from psrec.core.step import PHASES  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=60, help="timed steps per path (after the warm-up)")
    p.add_argument("--warmup", type=int, default=5, help="steps per path excluded from the figures")
    p.add_argument("--turn", type=int, default=5, help="steps of one path before the other's")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--fields", type=int, default=26)
    p.add_argument("--threads", type=int, default=1, help="torch threads (train.threads)")
    args = p.parse_args()
    n = args.warmup + args.steps
    over = [f"data.batch_size={args.batch}", f"synthetic.num_fields={args.fields}", f"train.threads={args.threads}",
            "model.name=deepfm", f"data.train_rows={n * args.batch}"]
    setups = {"raw": build_local(load_config(None, over)), "distinct": build_local(load_config(None, over))}
    setups["distinct"].step.raw = False
    src = setups["raw"].source
    batches = [src.read(i * args.batch, (i + 1) * args.batch) for i in range(n)]
    records: dict[str, list] = {k: [] for k in setups}
    for s in range(0, n, args.turn):
        for name, st in setups.items():
            for i in range(s, min(s + args.turn, n)):
                _, rec = st.step.train_batch(batches[i], i + 1)
                records[name].append(rec)
    med = {}
    print(f"local DeepFM step, batch {args.batch}, {args.fields} fields, {args.threads} torch thread(s); "
          f"medians of {args.steps} steps per path after {args.warmup} warm-up steps")
    print(f"{'path':<10}" + "".join(f"{ph:>10}" for ph in PHASES if ph not in ("wait", "pull", "alltoall",
                                                                              "allreduce", "push")) + f"{'step':>10}")
    for name, recs in records.items():
        steady = recs[args.warmup:]
        phases = {ph: statistics.median(r.seconds[ph] for r in steady) * 1e3 for ph in PHASES}
        med[name] = statistics.median(r.total for r in steady) * 1e3
        cols = "".join(f"{phases[ph]:>10.2f}" for ph in PHASES if ph not in ("wait", "pull", "alltoall",
                                                                           "allreduce", "push"))
        print(f"{name:<10}{cols}{med[name]:>10.2f}")
    print(f"local_step_ms_raw={med['raw']:.2f} local_step_ms_distinct={med['distinct']:.2f} "
          f"raw_over_distinct={med['distinct'] / med['raw']:.3f}")


if __name__ == "__main__":
    main()
