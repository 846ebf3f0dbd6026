"""No silent hangs: a worker that stops answering, stops making progress, dies or fails
ends the job with one line naming it; a job that can never be placed is refused at once."""
import os
import signal
import time
import types

import pytest

from psrec.core.job import JobFailed, check_placement, poll_ray_workers


@pytest.fixture(scope="module")
def Worker(ray_session):
    ray = ray_session

    @ray.remote(max_concurrency=2, num_cpus=0.1)
    class FakeWorker:
        """Trains `steps` steps of `seconds` each; `stuck_after` stops its step count there."""

        def __init__(self, steps, seconds, stuck_after=None, fail=False):
            self.steps, self.seconds, self.stuck_after, self.fail, self.done = steps, seconds, stuck_after, fail, 0

        def pid(self):
            return os.getpid()

        def run(self):
            for _ in range(self.steps):
                if self.fail and self.done == 2:
                    raise ValueError("boom at step 2")
                time.sleep(self.seconds)
                if self.stuck_after is None or self.done < self.stuck_after:
                    self.done += 1
            return self.done

        def progress(self):
            return {"steps": self.done, "rows": self.done, "phases": {"compute": 0.0}, "sent": 0, "received": 0}

    return FakeWorker


def _poll(ray, actors, **kw):
    return poll_ray_workers([a.run.remote() for a in actors], actors, None, None, (), **kw)


def test_workers_that_finish_are_returned(ray_session, Worker):
    actors = [Worker.remote(4, 0.05) for _ in range(2)]
    assert _poll(ray_session, actors, timeout_s=30, stall_s=30) == [4, 4]


def test_a_stalled_worker_is_named(ray_session, Worker):
    actors = [Worker.remote(200, 0.02), Worker.remote(200, 0.02, stuck_after=3)]
    t0 = time.monotonic()
    with pytest.raises(JobFailed, match=r"worker 1 made no progress for 1 s \(last step 3\)"):
        _poll(ray_session, actors, timeout_s=30, stall_s=1.0)
    assert time.monotonic() - t0 < 30
    for a in actors:
        ray_session.kill(a)


def test_a_failing_worker_ends_the_job_with_its_error(ray_session, Worker):
    actors = [Worker.remote(100, 0.02), Worker.remote(100, 0.02, fail=True)]
    with pytest.raises(JobFailed, match="worker 1 failed: ValueError: boom at step 2"):
        _poll(ray_session, actors, timeout_s=30, stall_s=30)
    for a in actors:
        ray_session.kill(a)


def test_a_sigstopped_worker_is_reported_not_waited_for(ray_session, Worker):
    """A real process frozen with SIGSTOP: its progress poll times out and the job says so."""
    actors = [Worker.remote(500, 0.02), Worker.remote(500, 0.02)]
    pid = ray_session.get(actors[1].pid.remote(), timeout=30)
    runs = [a.run.remote() for a in actors]
    time.sleep(0.3)
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(JobFailed, match=r"worker\(s\) 1 did not answer a progress poll within 2 s"):
            poll_ray_workers(runs, actors, None, None, (), timeout_s=2, stall_s=60)
    finally:
        os.kill(pid, signal.SIGCONT)
        for a in actors:
            ray_session.kill(a)


def test_a_job_that_can_never_be_placed_is_refused_at_once(ray_session):
    with pytest.raises(JobFailed, match=r"asks for 101 CPUs \(2 PS x 0.5 1, 100 workers x 1 100\)"):
        check_placement([("2 PS x 0.5", 1.0), ("100 workers x 1", 100.0)])
    check_placement([("2 PS x 0.5", 1.0)])  # fits: no error


def test_an_actor_that_dies_under_any_call_is_a_job_failure_and_other_errors_are_not(Worker, ray_session):
    """A PS killed while the job reads its stats (not while a worker waits on it) must still
    reach the recovery loop as a JobFailed naming the actor, not as a raw Ray traceback."""
    from psrec.core.job import _as_job_failed

    ray = ray_session
    w = Worker.remote(100, 0.05)
    os.kill(ray.get(w.pid.remote(), timeout=30), signal.SIGKILL)
    with pytest.raises(ray.exceptions.RayActorError) as caught:
        ray.get(w.run.remote(), timeout=30)
    failed = _as_job_failed(caught.value)
    assert isinstance(failed, JobFailed) and "FakeWorker died" in str(failed) and "\n" not in str(failed)
    # an actor the job holds is named as the job knows it (Job.actor_names)
    job = types.SimpleNamespace(actor_names=lambda: {w._actor_id.hex(): "worker 1"})
    assert str(_as_job_failed(caught.value, job)).startswith("worker 1 died (")
    job = types.SimpleNamespace(actor_names=lambda: {"0" * 32: "PS 0"})  # another actor's id: the class name
    assert "FakeWorker died" in str(_as_job_failed(caught.value, job))
    assert _as_job_failed(ValueError("a bug of ours")) is None
    same = JobFailed("worker 0 died")
    assert _as_job_failed(same) is same


def test_a_restart_whose_actors_cannot_start_is_one_failed_attempt(tmp_path):
    """Recovery under load: the first restart's actors miss their start-up deadline (a
    GetTimeoutError); that attempt counts as a failed one and the next restart trains on."""
    import ray.exceptions

    from psrec.config import load_config
    from psrec.core.job import run_job
    from psrec.core.local import LocalJob, build_local

    cfg = load_config(None, ["model.name=lr", "data.train_rows=1024", "data.eval_rows=256", "data.batch_size=128",
                             "train.progress=false", "run.checkpoint_every_steps=4", "run.on_failure=recover",
                             "run.save_model=false", f"run.dir={tmp_path}"])
    starts = []

    class DiesOnce(LocalJob):
        def train(self, bar, metrics, start=0, stop=None):
            if len(starts) == 1 and start >= 4:
                raise JobFailed("worker 0 died (SIGKILL in a test)")
            return super().train(bar, metrics, start, stop)

    def start():
        starts.append(1)
        if len(starts) == 2:
            raise ray.exceptions.GetTimeoutError("Get timed out: the PS actors did not start in 60 s")
        setup = build_local(cfg)
        return DiesOnce(cfg, setup)

    res = run_job(cfg, "local", start, build_local(cfg).source, run_dir=tmp_path / "r", total_steps=8)
    assert len(starts) == 3
    errors = [r["error"] for r in res["recoveries"]]
    assert len(errors) == 2 and "worker 0 died" in errors[0] and "did not answer within its deadline" in errors[1]
    assert [r["from_step"] for r in res["recoveries"]] == [4, 4]
    assert res.auc > 0.5  # the last attempt trained steps 5-8 from the checkpoint and evaluated
