"""Long-tail remedies for synchronous collective training: speed-proportional shares and
backup workers against plain lockstep, under one straggler (issue 19's target).

Collective DeepFM on Ray (real actors, gloo), `--workers` ranks, rank 1 `--factor`x slower
(`stragglers.factors`, a sleep after its real compute). Scenarios, all in this run:

    ideal          no straggler, interleaved batches (the baseline)
    sync           the straggler, plain lockstep
    proportional   the straggler, `collective.data = "proportional"` (shares of each round)
    backup         the straggler, N + 1 ranks, each step applies the first N gradients
    proportional_even  (--overhead) no straggler, proportional shares: the mechanism's own
                   cost (shares that follow load noise) apart
    ps_ideal, ps_sync, ps_proportional, ps_backup  (--ps) the same on sync PS (`ps.data`,
                   `ps.backup`), their ratios against ps_ideal

The scenarios run round-robin, `--repeats` rounds, so that the machine's load (2 shared
cores) drifts over all of them alike; each figure is the median over the rounds of the
steady-state step time (the job's wall-clock seconds per step after `train.warmup_steps` =
2 warm-up steps: `psrec.experiments.longtail_sync.steady_wall`), and each ratio is against
`ideal`'s median. AUC: held-out rows, the same in every run; `auc_delta_proportional` = median AUC of
proportional minus ideal's (both train the same rows per step, so only float summation
order differs). Last line:
`sync_vs_ideal=R proportional_vs_ideal=R backup_vs_ideal=R auc_delta_proportional=X` (with
--overhead and --ps, their scenarios' `<name>_vs_ideal=R` before the AUC figure).
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
    # 200K rows = 48 steps of 4 x 1024: shares settle within ~5 steps (2 of lag, then the
    # smoothing), which a 24-step run (100K rows) spends a fifth of its steady steps on
    ap.add_argument("--rows", type=int, default=200_000, help="training rows per run")
    ap.add_argument("--eval-rows", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=3)
    # the built-in synthetic source is the only data here (no file switch needed)
    ap.add_argument("--no-backup", action="store_true")
    ap.add_argument("--overhead", action="store_true", help="also proportional shares without a straggler")
    ap.add_argument("--ps", action="store_true", help="also sync PS: plain, proportional shares, backup workers")
    args = ap.parse_args()

    cfg = load_config(None, [f"data.train_rows={args.rows}", f"data.eval_rows={args.eval_rows}", "train.progress=false",
                             f'stragglers.factors="1:{args.factor:g}x"', "train.warmup_steps=2"])
    scenarios = [SyncScenario("ideal", straggle=False), SyncScenario("sync"),
                 SyncScenario("proportional", data="proportional")]
    if not args.no_backup:
        scenarios.append(SyncScenario("backup", backup=1))
    if args.overhead:
        scenarios.append(SyncScenario("proportional_even", straggle=False, data="proportional"))
    if args.ps:
        scenarios += [SyncScenario("ps_ideal", arch="ps", straggle=False), SyncScenario("ps_sync", arch="ps"),
                      SyncScenario("ps_proportional", arch="ps", data="proportional")]
        if not args.no_backup:
            scenarios.append(SyncScenario("ps_backup", arch="ps", backup=1))
    figs: dict[str, list[dict]] = {s.name: [] for s in scenarios}
    with tempfile.TemporaryDirectory(prefix="longtail-sync-") as tmp:
        for rep in range(args.repeats):
            for sc in scenarios:
                f = run_scenario(cfg, sc, args.workers, Path(tmp) / f"{sc.name}-{rep}")
                figs[sc.name].append(f)
                print(f"round {rep + 1}/{args.repeats} {sc.name:16s} step {f['step_ms']:7.1f} ms  AUC {f['auc']:.4f}  "
                      f"dropped/step {f['dropped_rows_per_step']:.0f}  rows/worker {f['rows_by_worker']}", flush=True)
    med = {n: statistics.median(f["step_ms"] for f in fs) for n, fs in figs.items()}
    auc = {n: statistics.median(f["auc"] for f in fs) for n, fs in figs.items()}
    print()
    base = {n: "ps_ideal" if n.startswith("ps_") else "ideal" for n in figs}
    for n in figs:
        print(f"{n:16s} median step {med[n]:7.1f} ms  ({med[n] / med[base[n]]:.3f}x {base[n]})  median AUC "
              f"{auc[n]:.4f}  steps {figs[n][0]['steps']} (2 warm-up excluded)")
    line = " ".join(f"{n}_vs_ideal={med[n] / med[base[n]]:.3f}" for n in figs if n not in ("ideal", "ps_ideal"))
    print(f"{line} auc_delta_proportional={auc['proportional'] - auc['ideal']:+.4f}")


if __name__ == "__main__":
    main()
