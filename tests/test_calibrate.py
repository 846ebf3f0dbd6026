"""`psrec calibrate`: results.json -> fit schema (golden values by hand), the fit recovering
known constants (CPU sharing, collective alpha-beta, per-step compute, jitter), errors that
name the file and the key, and the CLI writing a file `psrec simulate` reads."""
import json

import pytest

from psrec.cli import main
from psrec.sim.calibration import Calibration, CalibrationError, fit_calibration, load_calibration
from psrec.sim.contention import busy_processes, cpu_slowdown, expected_max_normal
from psrec.sim.results_map import find_results, load_run, map_results


def _phases(data, compute, pull, push, wait=0.0):
    return {"data": data, "compute": compute, "pull": pull, "push": push, "wait": wait, "allreduce": 0.0}


def ps_results(mode="ps-async", net=""):
    """2 workers x 3 steps, 2 PS, batch 4, 10 dense parameters; steady = steps 2-3."""
    w = []
    for i, (d, c, pl, ps) in enumerate([(0.02, 0.04, 0.03, 0.05), (0.04, 0.06, 0.05, 0.07)]):
        w.append({"worker": i, "steps": 3, "phases": _phases(1, 1, 1, 1, 0.5),  # first step included: ignored
                  "steady_steps": 2, "steady_phases": _phases(d, c, pl, ps, 0.01 * i),
                  "steady_emulated_seconds": 0.004 * (i + 1), "emulated_net_seconds": 9.0,
                  "pull_bytes": 3000, "push_bytes": 3600, "pull_messages": 6, "push_messages": 6})
    return {"mode": mode, "model": "lr", "workers": 2, "num_ps": 2, "batch_size": 4, "dense_params": 10,
            "net": net, "emulated_comm_fraction": 0.99, "per_worker": w,
            "per_ps": [{"apply_seconds": 0.06}, {"apply_seconds": 0.12}]}


def test_map_ps_async_golden():
    m = map_results(ps_results(), "runs/x/results.json", cores=2)
    assert m["name"] == "x" and m["mode"] == "ps-async" and m["model"] == "lr" and m["cores"] == 2
    # steady phases over 4 worker steps: compute = (0.02+0.04+0.04+0.06)/4, pull = 0.08/4, push = 0.12/4
    assert m["phases"]["compute"] == pytest.approx(0.04)
    assert m["phases"]["pull"] == pytest.approx(0.02)
    assert m["phases"]["push"] == pytest.approx(0.03)
    # counters over all 6 worker steps: 1000 and 1200 bytes; messages 2 per step, a pull counted twice
    assert m["bytes"] == {"pull": 1000.0, "push": 1200.0}
    assert m["messages"] == {"pull": 4.0, "push": 2.0}
    # rows = (1200 - 1000) / 8 = 25; values = (1000 - 8*25 - 4*10) / 4 = 190; per PS: / 2, dense + 10
    assert m["apply_rows"] == pytest.approx(12.5)
    assert m["apply_values"] == pytest.approx(100.0)
    # async: one apply per push, 6 pushes per shard; the busier shard: 0.12 / 6
    assert m["phases"]["apply"] == pytest.approx(0.02)
    assert m["wait"] == pytest.approx(0.01 / 4)
    # measured step: (worker 0: 0.14 + worker 1: 0.23 + 0.012 emulated) / 4 steps;
    # comm = (pull 0.08 + push 0.12 + emulated 0.012) / 0.382
    assert m["measured"]["step"] == pytest.approx(0.382 / 4)
    assert m["measured"]["comm_fraction"] == pytest.approx(0.212 / 0.382)
    assert "net" not in m  # phases exclude the emulated network: the fit must subtract nothing


def test_map_ps_sync_applies_per_global_step():
    m = map_results(ps_results("ps-sync"), "r.json")
    # sync: one apply per global step (3) of both workers' rows: 0.12 / 3; rows 2 * 25 / 2
    assert m["phases"]["apply"] == pytest.approx(0.04)
    # the shard merges duplicate keys of the 2 pushes: the distinct rows are not in results.json
    assert m["apply_rows"] is None and m["apply_values"] is None
    # what is known: 2 workers * 25 rows / 2 PS pushed, 190 / 25 values per row, dense 10 / 2
    assert m["sync_apply"] == {"pushed_rows": pytest.approx(25.0), "row_width": pytest.approx(7.6),
                               "dense_values": pytest.approx(5.0)}


def test_map_apply_from_the_shards_steady_applies_golden():
    """With each apply's seconds (`apply_recent`), the warm-up's applies and the spikes are left
    out as the workers' steps are; without them, the total over every apply."""
    r = ps_results()
    r["warmup_steps"] = 1  # 2 workers: the first 2 async applies per shard are the warm-up's
    r["per_ps"] = [{"apply_seconds": 0.5, "applies": 6, "apply_recent": [0.3, 0.1, 0.01, 0.012, 0.05, 0.014]},
                   {"apply_seconds": 0.06, "applies": 6, "apply_recent": [0.01] * 6}]
    # shard 0 after 2: median of (0.01, 0.012, 0.05, 0.014) 0.013, cap 0.026: (0.01+0.012+0.014)/3
    assert map_results(r, "r.json")["phases"]["apply"] == pytest.approx(0.012)
    r["per_ps"][0]["applies"] = 600  # the window no longer holds the first applies: none left out
    # all six: median (0.014 + 0.05) / 2 = 0.032, cap 0.064 leaves out 0.3 and 0.1
    assert map_results(r, "r.json")["phases"]["apply"] == pytest.approx((0.01 + 0.012 + 0.05 + 0.014) / 4)
    r["per_ps"][0]["apply_recent"][2] = float("nan")
    with pytest.raises(CalibrationError, match="apply_recent"):
        map_results(r, "r.json")


def test_map_per_step_records_trimmed_means_golden():
    """With per-step records: the 2 warm-up steps are left out, then every step longer than
    SPIKE (2) median steps (a burst of another job's load); each phase is its mean over the
    steps kept, so a push that waits for the sync apply in one step of two counts half."""
    r = ps_results("ps-sync")
    ph = lambda push, compute=0.010: {"data": 0.0, "compute": compute, "pull": 0.002, "push": push, "wait": 0.001,
                                      "allreduce": 0.0}
    steps = [ph(0.5), ph(0.5)] + [ph(0.004), ph(0.008)] * 3 + [ph(0.004, compute=0.060)]  # warm-up, 6, a spike
    for w in r["per_worker"]:
        w["step_seconds"], w["step_emulated"] = steps, [0.0] * 8 + [0.001]
    m = map_results(r, "r.json")
    # median step 0.021 (of 0.017 x3, 0.021 x3, 0.077 + 0.001): the spike (0.078 > 0.042) is dropped
    assert m["phases"]["push"] == pytest.approx(0.006)
    assert m["phases"]["compute"] == pytest.approx(0.010)
    assert m["measured"]["step"] == pytest.approx(0.019)
    assert m["measured"]["comm_fraction"] == pytest.approx(0.008 / 0.019)
    assert m["measured"]["emulated"] == 0.0
    steps[3] = {**ph(0.004), "push": "x"}
    with pytest.raises(CalibrationError, match=r"step_seconds\[\].push must be a number"):
        map_results(r, "r.json")


def test_map_without_steady_totals_uses_all_steps():
    r = ps_results()
    for w in r["per_worker"]:
        del w["steady_phases"]
    m = map_results(r, "r.json")
    assert m["phases"]["compute"] == pytest.approx(2.0 * 2 / 6)  # (data 1 + compute 1) * 2 workers / 6 steps
    assert m["measured"]["steady"] is False


def coll_results():
    w = [{"worker": i, "steps": 5, "phases": {}, "steady_steps": 4, "allreduce_total_seconds": 0.05,
          "steady_phases": {"data": 0.04, "compute": 0.2, "wait": 0.02, "alltoall": 0.08, "allreduce": 0.01,
                            "lookup": 0.02, "apply": 0.06},
          "steady_emulated_seconds": 0.0} for i in range(2)]
    return {"mode": "collective", "model": "deepfm", "workers": 2, "batch_size": 256, "net": "",
            "dense_buckets": 1, "messages_per_step": 6.0, "emulated_comm_fraction": 0.2,
            "bytes_per_step_by_kind": {"sizes": 32.0, "keys": 800.0, "rows": 6000.0, "grads": 6400.0, "dense": 4000.0},
            "per_worker": w, "per_shard": [{"keys_applied": 500}, {"keys_applied": 700}]}


def test_map_collective_golden():
    m = map_results(coll_results(), "c.json")
    assert m["model"] == "deepfm/collective"
    assert m["phases"]["compute"] == pytest.approx(0.24 * 2 / 8)  # (data + compute) per steady rank step
    assert m["phases"]["apply"] == pytest.approx(0.08 * 2 / 8)  # lookup + apply
    a2a, ar = m["collective"]["alltoall"], m["collective"]["allreduce"]
    # 6 - 2(N-1) messages; calls: 4 / (N-1), one all-reduce per dense bucket
    assert a2a == {"seconds": pytest.approx(0.02), "bytes": 13232.0, "messages": 4.0, "calls": 4.0,
                   "call_seconds": None}  # no per-step records: the library's part is not known
    assert ar == {"seconds": pytest.approx(0.01), "bytes": 4000.0, "messages": 2.0, "calls": 1.0}  # 0.1 s / 10 steps
    assert m["apply_rows"] == pytest.approx(120.0)  # 1200 rows / 10 rank steps
    assert m["wait"] == pytest.approx(0.005)
    assert m["measured"]["comm_fraction"] == pytest.approx(0.18 / 0.86)


def test_map_collective_call_seconds_golden():
    """Per-step records: the all-to-alls' time inside the library, the size exchange (booked as
    `wait`) and the dense all-reduce left out, over the steps after the warm-up that are not
    spikes (worker 0's step 4 is 10x the median)."""
    r = coll_results()
    r["warmup_steps"] = 1
    phases = {"data": 0.01, "compute": 0.05, "wait": 0.005, "alltoall": 0.02, "allreduce": 0.0025,
              "lookup": 0.005, "apply": 0.015}
    for i, w in enumerate(r["per_worker"]):
        w["step_seconds"] = [dict(phases) for _ in range(5)]
        w["step_emulated"] = [0.0] * 5
        w["step_call_seconds"] = [{"sizes": 0.004, "keys": 0.001 * (i + 1), "rows": 0.004, "grads": 0.005,
                                   "dense": 0.002} for _ in range(5)]
    r["per_worker"][0]["step_seconds"][4]["compute"] = 1.0
    r["per_worker"][0]["step_call_seconds"][4]["rows"] = 9.0  # in the spike: left out
    a2a = map_results(r, "c.json")["collective"]["alltoall"]
    assert a2a["seconds"] == pytest.approx(0.02)
    assert a2a["call_seconds"] == pytest.approx(((0.001 + 0.009) + (0.002 + 0.009)) / 2)  # 0.0105
    bad = json.loads(json.dumps(r))
    bad["per_worker"][0]["step_call_seconds"][2]["keys"] = "fast"
    with pytest.raises(CalibrationError, match=r"c.json: per_worker\[\].step_call_seconds\[\].keys must be a number"):
        map_results(bad, "c.json")
    r["per_worker"][1]["step_call_seconds"].pop()
    assert map_results(r, "c.json")["collective"]["alltoall"]["call_seconds"] is None  # one worker's are incomplete


def test_bad_results_name_file_and_key(tmp_path):
    r = ps_results()
    del r["per_worker"][1]["push_bytes"]
    path = tmp_path / "run1" / "results.json"
    path.parent.mkdir()
    path.write_text(json.dumps(r))
    with pytest.raises(CalibrationError, match=r"run1/results.json: missing key 'per_worker\[\].push_bytes'"):
        load_run(path)
    path.write_text(json.dumps({"mode": "local", "model": "lr"}))
    with pytest.raises(CalibrationError, match=r"results.json: mode 'local' is not a PS or collective run"):
        load_run(path)
    path.write_text("{not json")
    with pytest.raises(CalibrationError, match="results.json: not JSON"):
        load_run(path)
    r = coll_results()
    del r["dense_buckets"]
    with pytest.raises(CalibrationError, match="c.json: missing key 'dense_buckets'"):
        map_results(r, "c.json")
    with pytest.raises(CalibrationError, match="no results.json"):
        find_results(tmp_path / "run1" / "empty") if (tmp_path / "run1" / "empty").mkdir() is None else None


# --- the fit --------------------------------------------------------------------------------

TRUE = {"alpha": 2e-3, "beta": 8e-9, "coll_alpha": 5e-4, "coll_beta": 3e-9, "coll_call": 7e-4, "alltoall_beta": 2e-9,
        "apply_per_row": 1e-6,
        "apply_per_value": 2e-8, "apply_per_call": 3e-4, "coll_apply_per_row": 4e-6, "coll_apply_per_step": 5e-4}
C0, C1 = 0.02, 6e-5  # compute: 20 ms per step + 60 us per sample, per core


def synthetic_runs(cores=2.0):
    """Runs generated from TRUE on `cores` shared cores: every CPU time times max(1, W / cores)."""
    runs = []
    for mode, w, b, nbytes, dim in [("ps-async", 2, 256, 4e5, 17), ("ps-async", 4, 512, 9e5, 9),
                                    ("ps-sync", 3, 1024, 2e6, 33), ("collective", 2, 512, 6e5, 17),
                                    ("collective", 4, 1024, 1.5e6, 17)]:
        s = cpu_slowdown(w, cores)
        run = {"mode": mode, "model": "m" if mode != "collective" else "m/collective", "workers": w,
               "cores": cores, "batch_size": b}
        comp = s * (C0 + C1 * b)
        rows = nbytes / 100
        if mode == "collective":
            # 4 all-to-all calls of one message per peer; one all-reduce (a ring: 2(w-1)), not packed
            a2a = s * (TRUE["coll_call"] * 4 + TRUE["coll_alpha"] * 4 * (w - 1)
                       + (TRUE["coll_beta"] + TRUE["alltoall_beta"]) * nbytes)
            ar = s * (TRUE["coll_alpha"] * 2 * (w - 1) + TRUE["coll_beta"] * 1e6)
            run["collective"] = {"alltoall": {"seconds": a2a, "bytes": nbytes, "messages": 4 * (w - 1), "calls": 4},
                                 "allreduce": {"seconds": ar, "bytes": 1e6, "messages": 2 * (w - 1), "calls": 1}}
            run["phases"] = {"compute": comp,
                             "apply": s * (TRUE["coll_apply_per_row"] * rows + TRUE["coll_apply_per_step"])}
            run["apply_rows"] = rows
        else:
            msgs = {"pull": 4.0, "push": 2.0}
            byts = {"pull": nbytes, "push": 1.2 * nbytes}
            run["phases"] = {p: s * (TRUE["alpha"] * msgs[p] + TRUE["beta"] * byts[p]) for p in msgs}
            run["phases"]["compute"] = comp
            # ps-sync's apply runs on the 1 PS while the 3 workers wait: not slowed on 2 cores
            sa = cpu_slowdown(busy_processes(mode, "apply", w, 1), cores)
            assert sa == (1.0 if mode == "ps-sync" else s)
            run["phases"]["apply"] = sa * (TRUE["apply_per_call"] + TRUE["apply_per_row"] * rows
                                           + TRUE["apply_per_value"] * dim * rows)
            run.update(ps=1, bytes=byts, messages=msgs, apply_rows=rows, apply_values=dim * rows)
            # the push waits for the shard's apply: all of it (async), the last of W pushes (sync)
            run["phases"]["push"] += run["phases"]["apply"] / (w if mode == "ps-sync" else 1)
        runs.append(run)
    return runs


def test_fit_recovers_constants_on_shared_cores():
    cal = fit_calibration(synthetic_runs(), compute_intercept=True)
    for k, v in TRUE.items():
        assert getattr(cal, k) == pytest.approx(v, rel=1e-6), k
    for model in ("m", "m/collective"):
        assert cal.compute_per_step[model] == pytest.approx(C0, rel=1e-6)
        assert cal.compute_per_sample[model] == pytest.approx(C1, rel=1e-6)


def test_fit_without_calls_keeps_coll_call():
    """Entries without `calls` (an older mapping): every call is its messages, coll_call keeps
    its base value, and the other collective constants absorb the per-call cost."""
    runs = synthetic_runs()
    for r in runs:
        for op in (r.get("collective") or {}).values():
            del op["calls"]
    cal = fit_calibration(runs, base=Calibration(coll_call=1.5e-3), compute_intercept=True)
    assert cal.coll_call == 1.5e-3
    assert cal.coll_alpha != pytest.approx(TRUE["coll_alpha"], rel=1e-3)
    assert cal.alpha == pytest.approx(TRUE["alpha"], rel=1e-6)   # the PS fit is untouched


def test_fit_with_call_seconds_splits_library_and_packing():
    """With the all-to-alls' time inside the library given (`call_seconds`), the library's
    constants are fitted on it and the packing's on the rest: the same TRUE values. Read as all
    library (call_seconds = the whole phase), the packing constants come out 0 and the
    library's absorb them."""
    runs = synthetic_runs()
    for r in runs:
        if r["mode"] == "collective":
            w, a2a = r["workers"], r["collective"]["alltoall"]
            a2a["call_seconds"] = cpu_slowdown(w, 2.0) * (TRUE["coll_alpha"] * 4 * (w - 1)
                                                          + TRUE["coll_beta"] * a2a["bytes"])
    cal = fit_calibration(runs, compute_intercept=True)
    for k in ("coll_alpha", "coll_beta", "coll_call", "alltoall_beta"):
        assert getattr(cal, k) == pytest.approx(TRUE[k], rel=1e-6), k
    for r in runs:
        if r["mode"] == "collective":
            r["collective"]["alltoall"]["call_seconds"] = r["collective"]["alltoall"]["seconds"]
    cal = fit_calibration(runs, compute_intercept=True)
    assert cal.coll_call == 0.0 and cal.alltoall_beta == 0.0
    assert cal.coll_alpha > 1.1 * TRUE["coll_alpha"]  # the calls' 4 * 0.7 ms went to the messages


def test_fit_ignoring_shared_cores_is_biased():
    """The same runs read as if every worker had its own core: the constants come out too large."""
    runs = synthetic_runs()
    for r in runs:
        r["cores"] = 0
    cal = fit_calibration(runs, compute_intercept=True)
    assert cal.beta > 1.2 * TRUE["beta"]
    assert cal.compute_per_sample["m"] > 1.2 * C1


def test_fit_jitter_from_lockstep_waits():
    j = 0.1
    runs = []
    for w, step in [(2, 0.2), (4, 0.5), (8, 0.3)]:
        wait = j * expected_max_normal(w) * step  # the wait adds to the rest of the step
        runs.append({"mode": "collective", "workers": w, "wait": wait, "measured": {"step": step + wait}})
    runs.append({"mode": "ps-async", "workers": 4, "wait": 1.0, "measured": {"step": 2.0}})  # not lockstep
    assert fit_calibration(runs).jitter == pytest.approx(j, rel=1e-9)


def test_fit_jitter_per_mode_and_the_simulator_charges_each_its_own(tmp_path):
    """Collective ranks and hybrid workers wait at different points: each mode's runs fit their
    own jitter (`jitter_by_mode`), `jitter` pools them, and a mode without runs falls back to it."""
    from psrec.sim.calibration import load_calibration, save_calibration
    from psrec.sim.config import ClusterSpec, SimSpec
    from psrec.sim.costs import simulate

    truth = {"collective": 0.15, "hybrid": 0.02}
    runs = []
    for mode, j in truth.items():
        for w, step in [(2, 0.2), (3, 0.4)]:
            wait = j * expected_max_normal(w) * step
            runs.append({"mode": mode, "workers": w, "wait": wait, "measured": {"step": step + wait}})
    cal = fit_calibration(runs)
    assert cal.jitter_by_mode == pytest.approx(truth, rel=1e-9)
    assert truth["hybrid"] < cal.jitter < truth["collective"]
    assert cal.jitter_for("ps-sync") == cal.jitter  # no ps-sync runs
    assert load_calibration(save_calibration(cal, tmp_path / "cal.json")) == cal
    spec = SimSpec(cluster=ClusterSpec(workers=4, ps=1), calibration=cal)
    base = simulate(SimSpec(cluster=ClusterSpec(workers=4, ps=1)))
    got = simulate(spec)
    for mode in ("collective", "hybrid"):
        rest = got[mode].total - got[mode].wait
        assert got[mode].wait - base[mode].wait == pytest.approx(truth[mode] * expected_max_normal(4) * rest,
                                                                 rel=1e-6)
    with pytest.raises(CalibrationError, match="jitter_by_mode.collective"):
        Calibration(jitter_by_mode={"collective": -1.0})


# --- the command ----------------------------------------------------------------------------


def test_calibrate_cli_writes_a_calibration_simulate_reads(tmp_path, capsys):
    for i, mode in enumerate(["ps-async", "ps-sync"]):
        d = tmp_path / "runs" / f"r{i}"
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps(ps_results(mode)))
    c = tmp_path / "runs" / "c"
    c.mkdir()
    (c / "results.json").write_text(json.dumps(coll_results()))
    out = tmp_path / "cal.json"
    assert main(["calibrate", str(tmp_path / "runs"), "-o", str(out), "--cores", "2"]) == 0
    cal = load_calibration(out)
    assert "3 runs" in cal.source and cal.compute_per_sample["lr"] >= 0
    capsys.readouterr()
    assert main(["simulate", "--calibration", str(out), "--set", "model.name=lr", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"ps-async", "ps-sync", "hybrid", "collective"}


def test_calibrate_cli_bad_file(tmp_path, capsys):
    bad = tmp_path / "results.json"
    bad.write_text(json.dumps({"mode": "ps-async", "workers": 2}))
    assert main(["calibrate", str(bad), "-o", str(tmp_path / "c.json")]) == 2
    assert f"{bad}: missing key 'batch_size'" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()


def test_map_collective_on_saturated_cores_takes_the_exposed_allreduce():
    # 2 ranks on 2 cores: the all-reduce cannot hide, and its in-flight time (0.01 s a step,
    # above) waited behind compute; its cost is what the step exposed: 0.01 s * 2 / 8 steady steps.
    m = map_results(coll_results(), "c.json", cores=2.0)
    assert m["collective"]["allreduce"]["seconds"] == pytest.approx(0.0025)
    assert map_results(coll_results(), "c.json", cores=4.0)["collective"]["allreduce"]["seconds"] == pytest.approx(0.01)
