"""The pipelined collective step (`train.pipeline`) against the plain one: 2 gloo ranks on Ray,
DeepFM, 26 fields, MLP 400-400-400, batch 1024 per rank (the shapes TorchRec's
DistributedModelParallel was measured at on this machine: 35.2K samples/s).

Each mode ("off", "keys", "stale1") trains `--steps` steps per rank, `--repeats` times, the
modes' order rotated each repeat (the machine is shared and noisy). Figures per mode are
medians over the repeats of each run's steady state (its first `train.warmup_steps` steps
excluded, as `RunResult` reports them):

    real      the measured step (p50 over steps, slowest rank) and samples/s on this machine
    1g        the step with the emulated network's wire time added (`collective.net`,
              default 1 Gbit, 100 us): exchanges that flew on the side group during the
              previous step's compute count only for the part that did not fit in it

AUC on the held-out rows tells whether "stale1" (rows one step stale) trains as well.

Measured (2026-12-04, quiet 2-core machine, 3 repeats of 60 steps, with the emulated NIC of
`psrec.comm.nic`): plain 56.7 ms, keys 56.7, stale1 58.1 ms; 1g 70.5 / 70.4 / 69.7 ms; AUC
0.7511 / 0.7511 / 0.7457; 35.7K samples/s plain. The prefetch hides 5 ms (keys) and 12 ms
(stale1) of exchange per step, but its thread's work runs on cores that the two ranks'
compute already fills (compute 40.5 -> 44.6 / 46.3 ms). Most of the 1g step's ~14 ms of
emulated wire is the dense all-reduce's (one 4 MiB bucket launched at the end of backward),
which pipelining the embeddings cannot hide. (On 2026-12-03 the same shapes measured 108.8 ms
plain: the machine was about twice as slow that day.)

Usage: python benchmarks/pipeline_bench.py [--steps N] [--repeats R] [--net SPEC]
Last line: pipelined_over_plain_1g=R pipelined_over_plain_none=R collective_samples_per_s=N best=MODE auc_delta=X
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import psrec  # noqa: E402

MODES = ("off", "keys", "stale1")


def run_one(mode: str, args, run_dir: Path) -> dict[str, float]:
    rows = 2 * args.batch * args.steps
    cfg = psrec.load_config(None, [
        "model.name=deepfm", "model.params.hidden=[400,400,400]", "synthetic.num_fields=26",
        f"data.batch_size={args.batch}", f"data.train_rows={rows}", f"data.eval_rows={args.eval_rows}",
        "collective.workers=2", f"collective.net={args.net}", f"train.pipeline={mode}", "train.progress=false",
        f"run.dir={run_dir}", "collective.metrics_port=-1"])
    res = psrec.train(cfg, mode="collective")
    emu = max(w["emulated_step_p50"] for w in res.per_worker)  # the slowest rank sets the pace
    real = max(w["step_p50"] for w in res.per_worker)
    phases = {f"{k}_ms": 1e3 * res.phases.get(k, 0.0) for k in ("data", "wait", "alltoall", "lookup", "compute",
                                                                "allreduce", "apply")}
    hidden = statistics.mean(w["prefetch_hidden_seconds"] / max(1, w["steps"] - 1) for w in res.per_worker)
    return phases | {"step_ms": real * 1e3, "emu_step_ms": emu * 1e3, "samples_per_s": res.samples_per_s,
                     "auc": res.auc, "hidden_ms": hidden * 1e3}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=60, help="steps per rank per run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=1024, help="rows per rank per step")
    p.add_argument("--eval-rows", type=int, default=32768)
    p.add_argument("--net", default="bandwidth=1Gbit,latency=100us", help="emulated network (collective.net)")
    args = p.parse_args()
    got: dict[str, list[dict]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as d:
        for rep in range(args.repeats):
            for m in MODES[rep % len(MODES):] + MODES[:rep % len(MODES)]:
                got[m].append(run_one(m, args, Path(d)))
                print(f"repeat {rep + 1} {m:>6}: " + " ".join(f"{k}={v:.4g}" for k, v in got[m][-1].items()),
                      flush=True)
    med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in got.items()}
    print(f"\n2 ranks, DeepFM 26 fields, MLP 400-400-400, batch {args.batch}/rank, {args.steps} steps/rank; "
          f"medians of {args.repeats} runs; net for '1g': {args.net}")
    print(f"{'pipeline':<9}{'step ms':>10}{'1g step ms':>12}{'hidden ms':>11}{'samples/s':>12}{'AUC':>9}")
    for m in MODES:
        r = med[m]
        print(f"{m:<9}{r['step_ms']:>10.2f}{r['emu_step_ms']:>12.2f}{r['hidden_ms']:>11.2f}"
              f"{r['samples_per_s']:>12,.0f}{r['auc']:>9.4f}")
    best = min(("keys", "stale1"), key=lambda m: med[m]["emu_step_ms"])
    off = med["off"]
    print(f"pipelined_over_plain_1g={off['emu_step_ms'] / med[best]['emu_step_ms']:.3f} "
          f"pipelined_over_plain_none={off['step_ms'] / min(med[m]['step_ms'] for m in ('keys', 'stale1')):.3f} "
          f"collective_samples_per_s={max(med[m]['samples_per_s'] for m in MODES):.0f} best={best} "
          f"auc_delta={med[best]['auc'] - off['auc']:+.4f}")


if __name__ == "__main__":
    main()
