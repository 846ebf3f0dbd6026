"""psrec.sim's calibration fit: constants recovered from synthetic runs generated with them,
with and without noise, an emulated network and the shard's lookup; the non-negative least
squares against its optimality conditions; the calibration file."""
import json

import numpy as np
import pytest

from psrec.sim import Calibration, fit_calibration, load_calibration, save_calibration
from psrec.sim.calibration import CalibrationError, _nonneg_lstsq

# --- calibration ---------------------------------------------------------------------------

TRUE = dict(alpha=2e-4, beta=3e-9, apply_per_row=4e-7, apply_per_value=1.5e-9)
PER_SAMPLE = {"deepfm": 5e-5, "dcn": 8e-5}


def synthetic_results(noise=0.0, net=None):
    """Runs generated from known constants, in the results.json schema of psrec.sim.calibration."""
    from psrec.net import parse_net, transfer_time

    rng = np.random.default_rng(0)
    out = []
    for _i, (model, batch, msgs, nbytes, rows, dim) in enumerate([
            ("deepfm", 256, 2, 1e5, 5_000, 8), ("deepfm", 1024, 4, 8e5, 20_000, 16),
            ("dcn", 512, 8, 3e6, 40_000, 16), ("dcn", 2048, 16, 2e5, 9_000, 32),
            ("deepfm", 4096, 1, 5e6, 60_000, 8)]):
        def meas(t):
            return t * (1 + noise * rng.standard_normal())
        pull_b, push_b = nbytes, 1.3 * nbytes
        pull_t = TRUE["alpha"] * msgs + TRUE["beta"] * pull_b
        push_t = TRUE["alpha"] * msgs + TRUE["beta"] * push_b
        if net:
            pull_t += transfer_time(parse_net(net), pull_b, msgs)
            push_t += transfer_time(parse_net(net), push_b, msgs)
        run = {"model": model, "workers": 2, "ps": 2, "batch_size": batch,
               "phases": {"pull": meas(pull_t), "push": meas(push_t),
                          "compute": meas(PER_SAMPLE[model] * batch),
                          "apply": meas(TRUE["apply_per_row"] * rows + TRUE["apply_per_value"] * rows * dim)},
               "bytes": {"pull": pull_b, "push": push_b}, "messages": {"pull": msgs, "push": msgs},
               "apply_rows": rows, "apply_values": rows * dim}
        if net:
            run["net"] = net
        out.append(run)
    return out


def test_fit_calibration_recovers_constants():
    cal = fit_calibration(synthetic_results())
    for k, v in TRUE.items():
        assert getattr(cal, k) == pytest.approx(v, rel=1e-6), k
    for m, v in PER_SAMPLE.items():
        assert cal.compute_per_sample[m] == pytest.approx(v, rel=1e-9)
    assert cal.compute_per_sample["default"] == Calibration().compute_per_sample["default"]  # kept from base


def test_fit_calibration_subtracts_emulated_network():
    cal = fit_calibration(synthetic_results(net="bandwidth=1Gbit,latency=100us"))
    assert cal.alpha == pytest.approx(TRUE["alpha"], rel=1e-6)
    assert cal.beta == pytest.approx(TRUE["beta"], rel=1e-6)


def test_fit_calibration_with_noise():
    cal = fit_calibration(synthetic_results(noise=0.02))
    assert cal.alpha == pytest.approx(TRUE["alpha"], rel=0.15)
    assert cal.beta == pytest.approx(TRUE["beta"], rel=0.1)
    assert cal.compute_per_sample["dcn"] == pytest.approx(PER_SAMPLE["dcn"], rel=0.05)


def test_fit_calibration_recovers_the_lookup():
    """Pulls that also waited for the busiest shard's lookup (`lookup_rows`): a third unknown.
    Two runs are ps-sync with 3 workers: their pulls also queued 1/3 of a lookup on average
    (`sync_pull_queue`), and their pushes held 1/3 of the merged apply."""
    lookup = 3e-7
    runs = synthetic_results()
    for i, run in enumerate(runs):
        run["lookup_rows"] = served = run["apply_rows"] / (2 + i)  # per-shard shares that vary
        run["phases"]["pull"] += lookup * served
        if i in (1, 3):
            run.update(mode="ps-sync", workers=3)
            run["phases"]["pull"] += lookup * served / 3
            run["phases"]["push"] += run["phases"]["apply"] / 3
    cal = fit_calibration(runs)
    assert cal.lookup_per_row == pytest.approx(lookup, rel=1e-6)
    for k, v in TRUE.items():
        assert getattr(cal, k) == pytest.approx(v, rel=1e-6), k
    # one pull without its shard's rows: the lookup is not fitted (kept from base)
    del runs[0]["lookup_rows"]
    assert fit_calibration(runs).lookup_per_row == Calibration().lookup_per_row


def test_fit_calibration_takes_the_inline_apply_out_of_async_and_hybrid_pushes():
    """ps-async and hybrid shards apply a push before it returns: the push held the whole
    apply, which the fit must take out before it fits alpha and beta; without that the
    constants come out wrong."""
    runs = synthetic_results()
    for i, run in enumerate(runs):
        run["mode"] = "hybrid" if i % 2 else "ps-async"
        run["phases"]["push"] += run["phases"]["apply"]
    cal = fit_calibration(runs)
    assert cal.alpha == pytest.approx(TRUE["alpha"], rel=1e-6)
    assert cal.beta == pytest.approx(TRUE["beta"], rel=1e-6)
    for run in runs:
        del run["mode"]  # a run of no stated mode holds no apply: the fit takes it for communication
    wrong = fit_calibration(runs)
    assert (wrong.alpha, wrong.beta) != pytest.approx((TRUE["alpha"], TRUE["beta"]), rel=1e-3)


def test_nonneg_lstsq_meets_the_kkt_conditions():
    """x >= 0 and the gradient g = a^T (a x - y) is 0 where x > 0 and >= 0 where x = 0: the
    optimality conditions of non-negative least squares (Lawson & Hanson 1974, ch. 23)."""
    rng = np.random.default_rng(1)
    clipped = 0
    for _ in range(50):
        a = rng.uniform(0, 1, (8, 3))
        y = a @ rng.uniform(-1, 1, 3) + rng.normal(0, 0.1, 8)
        x = _nonneg_lstsq(a, y)
        g = a.T @ (a @ x - y)
        assert (x >= 0).all()
        assert np.allclose(g[x > 0], 0, atol=1e-9) and (g[x == 0] >= -1e-9).all()
        clipped += int((x == 0).any())
    assert clipped > 10  # the constraint was active in many of the draws


def test_fit_calibration_partial_and_bad_input():
    base = Calibration(alpha=7e-5)
    cal = fit_calibration([{"batch_size": 100, "phases": {"compute": 0.01}}], base=base)
    assert cal.alpha == 7e-5 and cal.compute_per_sample["default"] == pytest.approx(1e-4)
    with pytest.raises(CalibrationError, match="phases.pull"):
        fit_calibration([{"phases": {"pull": "slow"}, "bytes": {"pull": 1}, "messages": {"pull": 1}}])


def test_calibration_json_round_trip(tmp_path):
    cal = Calibration(alpha=1e-4, beta=2e-9, compute_per_sample={"default": 1e-4, "dcn": 3e-4}, source="t")
    path = save_calibration(cal, tmp_path / "cal.json")
    assert load_calibration(path) == cal
    (tmp_path / "bad.json").write_text(json.dumps({"alpha": 1e-4, "gamma": 1}))
    with pytest.raises(CalibrationError, match="gamma"):
        load_calibration(tmp_path / "bad.json")
