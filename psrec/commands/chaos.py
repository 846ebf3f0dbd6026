"""`psrec chaos`: kill parameter servers and workers of a real PS job, and check it survives.

Three parts, all with real processes:

1. the job undisturbed: sync PS on Ray, checkpoints every `--every` steps;
2. the same job with `run.on_failure = "recover"`, while a killer SIGKILLs one PS actor's
   process, then one worker actor's, each at a random moment after a checkpoint exists; the
   job restarts from the newest checkpoint each time (sync training rolls back to it);
3. `--ckpt-kills` SIGKILLs of a process while it writes checkpoints (a 40K-row table), then
   every checkpoint left is verified.

Rows lost or trained twice are read from the final model, not assumed: every update adds each
key occurrence of a row to its table's `freq`, so the chaos run's summed freqs against the
undisturbed run's count the rows its surviving state trained (one row = the undisturbed run's
occurrences per row). The last line:

    chaos_completed=1 rows_lost=N rows_twice=N auc_delta=X restarts=N broken_checkpoints=N

4. unless `--no-collective`: the same for a collective job on Ray (`--workers` ranks, a
   checkpoint every `--every` steps): undisturbed, then with one rank SIGKILLed after a
   checkpoint exists; a lost rank breaks the group, so the job restarts every rank from the
   newest checkpoint (`collective.checkpoint`).

The last line sums rows lost, rows twice and restarts over both jobs and gives the AUC delta
of larger magnitude; a line per job on stderr gives each one's.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from psrec.commands import add_config_args, add_run_args


def register(sub) -> None:
    p = sub.add_parser("chaos", help="kill a PS and a worker of a real job and check it recovers",
                       description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2, help="PS workers (default 2)")
    p.add_argument("--ps", type=int, default=2, help="parameter servers (default 2)")
    p.add_argument("--rows", type=int, default=65_536, help="training rows (default 65,536)")
    p.add_argument("--every", type=int, default=4, help="checkpoint every N global steps (default 4)")
    p.add_argument("--ckpt-kills", type=int, default=40, help="SIGKILLs during checkpoint writes (default 40)")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    p.add_argument("--no-collective", dest="collective", action="store_false",
                   help="skip the collective job's leg (rank loss -> restart from the checkpoint)")
    p.add_argument("--name", help="run directory name (run.name); default: a temporary directory")
    add_config_args(p)
    add_run_args(p)
    p.set_defaults(func=run)


def _pid(actor) -> int:
    import ray

    return int(ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=30))


def _freq_total(run_dir: Path) -> int:
    """Summed freqs of every table of the run's saved model (all shards)."""
    from psrec.core.saved_model import find_model

    model = find_model(run_dir)
    return int(sum(np.load(f).sum() for f in model.glob("tables/shard-*/*/freqs.npy")))


_PS_TARGETS = (("ps", lambda job: job.ps_actors), ("worker", lambda job: job.workers))
_RANK_TARGETS = (("rank", lambda job: job.actors),)


class _Killer(threading.Thread):
    """SIGKILLs one actor of each of `targets` ((what, job -> its actors); default: a PS, then
    a worker) of the job in `jobs[-1]`, each after `checkpoints` holds a checkpoint newer than
    the last kill."""

    def __init__(self, jobs: list, checkpoints: Path, rng: np.random.Generator, last_step: int,
                 targets=_PS_TARGETS) -> None:
        super().__init__(daemon=True)
        self.jobs, self.checkpoints, self.rng, self.targets = jobs, checkpoints, rng, targets
        self.last_step = last_step  # kill only while at least half the training is still to come
        self.killed: list[str] = []
        self.stop = threading.Event()

    def _wait_checkpoint(self, after: int) -> int:
        from psrec.core import checkpoint

        while not self.stop.is_set():
            done = checkpoint.list_checkpoints(self.checkpoints)
            if done and int(done[-1].name.split("-")[1]) > after:
                return int(done[-1].name.split("-")[1])
            time.sleep(0.05)
        return after

    def run(self) -> None:
        seen = 0
        for what, actors_of in self.targets:
            seen = self._wait_checkpoint(seen)
            if seen > self.last_step:  # too late: the kill could land in the evaluation, not training
                self.killed.append(f"{what}: not killed (step {seen} is past {self.last_step})")
                return
            time.sleep(float(self.rng.uniform(0.0, 0.3)))
            if self.stop.is_set() or not self.jobs:
                return
            actors = actors_of(self.jobs[-1])
            try:
                pid = _pid(actors[int(self.rng.integers(len(actors)))])
                os.kill(pid, signal.SIGKILL)
                self.killed.append(f"{what} pid {pid}")
            except Exception as e:  # noqa: BLE001 - the job may be between attempts: try the next
                self.killed.append(f"{what}: not killed ({type(e).__name__})")


_WRITER = """
import sys, numpy as np
from psrec.core import checkpoint
from psrec.ev import EVConfig, EmbeddingVariable
ev = EmbeddingVariable(EVConfig(dim=16), name="t")
keys = np.arange(40000, dtype=np.int64)
ev.apply_gradients(keys, np.ones((len(keys), 16), np.float32), np.ones(len(keys), np.int64), 1)
print("ready", flush=True)
step = 0
while True:
    step += 1
    checkpoint.write_checkpoint(sys.argv[1], step, lambda d: (ev.export(d / "t", evict=False), {})[1])
"""


def broken_after_kills(root: Path, kills: int, rng: np.random.Generator) -> tuple[int, int]:
    """(broken, verified) checkpoints under `root` after `kills` SIGKILLs of a writer process."""
    from psrec.core import checkpoint

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    broken = 0
    for _ in range(kills):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(root)], stdout=subprocess.PIPE, env=env)
        if proc.stdout.readline().strip() != b"ready":
            proc.kill()
            raise RuntimeError("the checkpoint writer did not start")
        time.sleep(float(rng.uniform(0.02, 0.5)))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        for p in checkpoint.list_checkpoints(root):
            try:
                checkpoint.verify(p)
            except checkpoint.CheckpointError:
                broken += 1
                import shutil

                shutil.rmtree(p)  # counted once
    return broken, len(checkpoint.list_checkpoints(root))


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from psrec.config import load_config, with_section
    from psrec.core.job import run_job
    from psrec.data.factory import make_source
    from psrec.ps.ray_runner import RayPSJob
    from psrec.ps.runner import plan_ps, ps_mode, run_ps
    from psrec.raysession import ensure_ray

    rng = np.random.default_rng(args.seed)
    base_dir = Path(tempfile.mkdtemp(prefix="psrec-chaos-")) if not args.name else None
    overrides = [f"ps.workers={args.workers}", f"ps.num_ps={args.ps}", "ps.sync=true", "ps.transport=ray",
                 f"data.train_rows={args.rows}", f"run.checkpoint_every_steps={args.every}", "ps.metrics_port=-1",
                 "train.progress=false", "run.keep_checkpoints=3", *args.overrides]
    if base_dir is not None:
        overrides.append(f"run.dir={base_dir}")
    cfg = load_config(args.config, overrides)
    name = args.name or "chaos"
    ensure_ray(cfg.ps.address)
    print(f"chaos: {args.workers} workers, {args.ps} PS, sync, {args.rows:,} rows, checkpoint every "
          f"{args.every} steps", file=sys.stderr)
    t0 = time.perf_counter()
    ref = run_ps(with_section(cfg, run=dataclasses.replace(cfg.run, name=f"{name}-undisturbed")))
    print(f"  undisturbed: AUC {ref.auc:.4f} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)

    ccfg = with_section(cfg, run=dataclasses.replace(cfg.run, name=f"{name}-killed", on_failure="recover",
                                                     max_restarts=4))
    source = make_source(ccfg)
    plan = plan_ps(ccfg, source)
    jobs: list = []

    def start():
        job = RayPSJob(plan, source)
        jobs.append(job)
        return job

    run_dir = Path(ccfg.run.dir) / ccfg.run.name
    killer = _Killer(jobs, run_dir / "checkpoints", rng, plan.rounds // 2)
    killer.start()
    t1 = time.perf_counter()
    try:
        res = run_job(ccfg, ps_mode(ccfg), start, source, run_dir=run_dir, total_steps=plan.rounds * args.workers,
                      metrics_port=-1, details={"num_ps": args.ps})
    finally:
        killer.stop.set()
    restarts = len(res["recoveries"])
    print(f"  killed: {'; '.join(killer.killed) or 'nothing'}; {restarts} restarts "
          f"({', '.join(str(r['from_step']) for r in res['recoveries'])}); AUC {res.auc:.4f} "
          f"({time.perf_counter() - t1:.0f} s)", file=sys.stderr)
    rows_lost, rows_twice = _rows_lost_twice(Path(ref.path), run_dir, ref.train_rows)
    auc_delta = res.auc - ref.auc
    print(f"  ps job: rows_lost={rows_lost} rows_twice={rows_twice} auc_delta={auc_delta:.4f} restarts={restarts}",
          file=sys.stderr)
    completed = int(res.steps > 0 and res.train_rows > 0)
    if args.collective:
        c = _collective_leg(cfg, args, rng, name)
        rows_lost, rows_twice = rows_lost + c["rows_lost"], rows_twice + c["rows_twice"]
        restarts += c["restarts"]
        auc_delta = max(auc_delta, c["auc_delta"], key=abs)
        completed &= c["completed"]
    with tempfile.TemporaryDirectory(prefix="psrec-chaos-ckpt-") as d:
        broken, kept = broken_after_kills(Path(d), args.ckpt_kills, rng)
    print(f"  checkpoint writer: {args.ckpt_kills} SIGKILLs, {kept} checkpoints left, {broken} broken",
          file=sys.stderr)
    print(f"chaos_completed={completed} rows_lost={rows_lost} rows_twice={rows_twice} "
          f"auc_delta={auc_delta:.4f} restarts={restarts} broken_checkpoints={broken}")
    return 0 if completed else 1


def _rows_lost_twice(ref_dir: Path, run_dir: Path, train_rows: int) -> tuple[int, int]:
    """(rows lost, rows trained twice) of `run_dir`'s model against the undisturbed `ref_dir`'s (module doc)."""
    want, got = _freq_total(ref_dir), _freq_total(run_dir)
    per_row = want / train_rows
    return int(round(max(0, want - got) / per_row)), int(round(max(0, got - want) / per_row))


def _collective_leg(cfg, args: argparse.Namespace, rng: np.random.Generator, name: str) -> dict:
    """Part 4 of the module doc: a collective job on Ray undisturbed, then with a rank killed."""
    import dataclasses

    from collective.jobs import RayJob
    from collective.plan import plan_collective
    from collective.runner import run_collective
    from psrec.config import with_section
    from psrec.core.job import run_job
    from psrec.data.factory import make_source

    coll = dataclasses.replace(cfg.collective, workers=args.workers, transport="ray", metrics_port=-1)
    cfg = with_section(cfg, collective=coll)
    t0 = time.perf_counter()
    ref = run_collective(with_section(cfg, run=dataclasses.replace(cfg.run, name=f"{name}-collective-undisturbed")))
    print(f"  collective undisturbed: AUC {ref.auc:.4f} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    ccfg = with_section(cfg, run=dataclasses.replace(cfg.run, name=f"{name}-collective-killed", on_failure="recover",
                                                     max_restarts=4))
    source = make_source(ccfg)
    plan = plan_collective(ccfg, coll, source)
    jobs: list = []

    def start():
        jobs.append(RayJob(plan))
        return jobs[-1]

    run_dir = Path(ccfg.run.dir) / ccfg.run.name
    killer = _Killer(jobs, run_dir / "checkpoints", rng, plan.rounds // 2, _RANK_TARGETS)
    killer.start()
    t1 = time.perf_counter()
    try:
        res = run_job(ccfg, "collective", start, source, run_dir=run_dir, total_steps=plan.rounds * coll.workers,
                      metrics_port=-1)
    finally:
        killer.stop.set()
    restarts = len(res["recoveries"])
    lost, twice = _rows_lost_twice(Path(ref.path), run_dir, ref.train_rows)
    print(f"  collective killed: {'; '.join(killer.killed) or 'nothing'}; {restarts} restarts "
          f"({', '.join(str(r['from_step']) for r in res['recoveries'])}); AUC {res.auc:.4f} "
          f"({time.perf_counter() - t1:.0f} s)", file=sys.stderr)
    print(f"  collective job: rows_lost={lost} rows_twice={twice} auc_delta={res.auc - ref.auc:.4f} "
          f"restarts={restarts}", file=sys.stderr)
    return {"rows_lost": lost, "rows_twice": twice, "auc_delta": res.auc - ref.auc, "restarts": restarts,
            "completed": int(res.steps > 0 and res.train_rows > 0)}
