"""Long-tail remedies for synchronous collective training: speed-proportional shares and
backup workers against plain lockstep, under one straggler (issue 19's target).

Collective DeepFM on Ray (real actors, gloo), `--workers` ranks, rank 1 `--factor`x slower
(`stragglers.factors`, a sleep after its real compute). Scenarios, all in this run:

    ideal          no straggler, interleaved batches (the baseline)
    sync           the straggler, plain lockstep
    proportional   the straggler, `collective.data = "proportional"` (shares of each round)
    backup         the straggler, N + 1 ranks, each step applies the first N gradients
    proportional_even  (--overhead) no straggler, proportional shares: the mechanism's own
                   cost (its control all-reduce, shares that follow load noise) apart

The scenarios run round-robin, `--repeats` rounds, so that the machine's load (2 shared
cores) drifts over all of them alike; each figure is the median over the rounds of the
steady-state step time (the job's wall-clock seconds per step after `train.warmup_steps` =
2 warm-up steps: `psrec.experiments.longtail_sync.steady_wall`), and each ratio is against
`ideal`'s median. AUC: held-out rows, the same in every run; `auc_delta_proportional` = median AUC of
proportional minus ideal's (both train the same rows per step, so only float summation
order differs). Last line:
`sync_vs_ideal=R proportional_vs_ideal=R backup_vs_ideal=R auc_delta_proportional=X`
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from psrec.config import load_config  # noqa: E402
from psrec.experiments.longtail_sync import SyncScenario, run_scenario  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--factor", type=float, default=4.0)
    ap.add_argument("--rows", type=int, default=100_000, help="training rows per run")
    ap.add_argument("--eval-rows", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=3)
    # the built-in synthetic source is the only data here (no file switch needed)
    ap.add_argument("--no-backup", action="store_true")
    ap.add_argument("--overhead", action="store_true", help="also proportional shares without a straggler")
    args = ap.parse_args()

    cfg = load_config(None, [f"data.train_rows={args.rows}", f"data.eval_rows={args.eval_rows}", "train.progress=false",
                             f'stragglers.factors="1:{args.factor:g}x"', "train.warmup_steps=2"])
    scenarios = [SyncScenario("ideal", straggle=False), SyncScenario("sync"),
                 SyncScenario("proportional", data="proportional")]
    if not args.no_backup:
        scenarios.append(SyncScenario("backup", backup=1))
    if args.overhead:
        scenarios.append(SyncScenario("proportional_even", straggle=False, data="proportional"))
    figs: dict[str, list[dict]] = {s.name: [] for s in scenarios}
    with tempfile.TemporaryDirectory(prefix="longtail-sync-") as tmp:
        for rep in range(args.repeats):
            for sc in scenarios:
                f = run_scenario(cfg, sc, args.workers, Path(tmp) / f"{sc.name}-{rep}")
                figs[sc.name].append(f)
                print(f"round {rep + 1}/{args.repeats} {sc.name:12s} step {f['step_ms']:7.1f} ms  AUC {f['auc']:.4f}  "
                      f"dropped/step {f['dropped_rows_per_step']:.0f}  rows/worker {f['rows_by_worker']}", flush=True)
    med = {n: statistics.median(f["step_ms"] for f in fs) for n, fs in figs.items()}
    auc = {n: statistics.median(f["auc"] for f in fs) for n, fs in figs.items()}
    print()
    for n in figs:
        print(f"{n:12s} median step {med[n]:7.1f} ms  ({med[n] / med['ideal']:.3f}x ideal)  median AUC {auc[n]:.4f}  "
              f"steps {figs[n][0]['steps']} (2 warm-up excluded)")
    line = " ".join(f"{n}_vs_ideal={med[n] / med['ideal']:.3f}" for n in figs if n != "ideal")
    print(f"{line} auc_delta_proportional={auc['proportional'] - auc['ideal']:+.4f}")


if __name__ == "__main__":
    main()
