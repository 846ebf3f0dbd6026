"""Jobs that survive faults: `psrec chaos` on a real Ray PS job (real SIGKILLs of a PS actor
and a worker actor) and a real collective job (a rank SIGKILLed), and a dead worker without
recovery reported in one line."""
import argparse
import os
import re
import signal
import threading
import time

import pytest

import psrec
from psrec.commands import chaos
from psrec.core.job import JobFailed

SMALL = ["--set", "synthetic.num_fields=6", "--set", "synthetic.num_dense=2", "--set", "embedding.dim=4",
         "--set", "model.params.hidden=[8]", "--set", "data.eval_rows=2048", "--set", "data.batch_size=256"]


def test_chaos_kills_a_ps_and_the_job_recovers_with_no_row_lost(ray_session, tmp_path, capsys):
    p = argparse.ArgumentParser()
    chaos.register(p.add_subparsers())
    args = p.parse_args(["chaos", "--rows", "16384", "--every", "4", "--ckpt-kills", "4", "--name", "c",
                         "--set", f"run.dir={tmp_path}", *SMALL])
    assert args.func(args) == 0
    out = capsys.readouterr()
    line = out.out.strip().splitlines()[-1]
    got = dict(kv.split("=") for kv in line.split())
    assert got["chaos_completed"] == "1" and got["broken_checkpoints"] == "0"
    # the collective leg: a rank SIGKILLed, every rank restarted from the checkpoint, no row lost
    assert re.search(r"collective killed: rank pid \d+; 1 restarts", out.err), out.err[-2000:]
    assert "collective job: rows_lost=0 rows_twice=0" in out.err
    assert int(got["restarts"]) >= 1  # the PS kill always lands: it waits for a checkpoint first
    assert got["rows_lost"] == "0" and got["rows_twice"] == "0"
    assert abs(float(got["auc_delta"])) <= 0.005


def test_a_killed_worker_without_recovery_fails_in_one_line(ray_session, tmp_path):
    """on_failure = "fail" (the default): the job stops at once, naming the worker."""
    from psrec.core.job import run_job
    from psrec.data.factory import make_source
    from psrec.ps.ray_runner import RayPSJob
    from psrec.ps.runner import plan_ps

    cfg = psrec.load_config(overrides=[s for s in SMALL if s != "--set"] + [
        "data.train_rows=65536", "ps.workers=2", "ps.num_ps=1", "ps.sync=true", "ps.metrics_port=-1",
        "train.progress=false", f"run.dir={tmp_path}", 'stragglers.factors="0:3x"'])
    source = make_source(cfg)
    plan = plan_ps(cfg, source)
    jobs = []

    def start():
        jobs.append(RayPSJob(plan, source))
        return jobs[-1]

    def kill():
        deadline = time.monotonic() + 120
        while not jobs and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        os.kill(chaos._pid(jobs[-1].workers[1]), signal.SIGKILL)

    threading.Thread(target=kill, daemon=True).start()
    with pytest.raises(JobFailed, match=r"^worker 1 died \(") as e:
        run_job(cfg, "ps-sync", start, source, run_dir=tmp_path / "r", total_steps=1, metrics_port=-1)
    assert "\n" not in str(e.value) and re.search(r"died \(\w+", str(e.value))
