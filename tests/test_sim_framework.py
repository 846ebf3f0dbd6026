"""What a training script's implementation adds to a GPU step (psrec.sim.framework_cost): golden
numbers by hand for every cost function, how evaluate_plan books them on every GPU preset, and
the published DLRM reproductions' configs (their errors are printed, never asserted)."""
import dataclasses
import doctest
import json
from pathlib import Path

import pytest

from psrec.sim.config import ClusterSpec, DataSpec, GPUOptions, ModelSpec, SimOptions, SimSpec, TableSpec
from psrec.sim.framework_cost import (
    GRAD_BYTES,
    HOST_COPY_BANDWIDTH,
    IMPLEMENTATIONS,
    PAGEABLE_SHARE,
    FrameworkCost,
    Implementation,
    dispatch_time,
    framework_cost,
    get_implementation,
    host_step,
    input_copy_time,
    padded_interaction_flops,
    pooled_traffic_time,
)
from psrec.sim.hardware import get_hardware
from psrec.sim.placement import evaluate_plan, with_gpus

ROOT = Path(__file__).resolve().parents[1]
APRIL = ROOT / "configs" / "published_dlrm_v100.toml"
JULY = ROOT / "configs" / "published_dlrm_v100_2020_07.toml"


def test_doctests():
    import psrec.sim.framework_cost as mod

    result = doctest.testmod(mod)
    assert result.attempted >= 8 and result.failed == 0


def test_pooled_traffic_golden():
    # 3 passes over 10 samples x (2 vectors x 8 + 1 x 16) values x 2 B at 1 GB/s
    assert pooled_traffic_time(10, 2 * 8 + 16, 3, 1e9, 2) == pytest.approx(3 * 10 * 32 * 2 / 1e9)
    assert pooled_traffic_time(10, 32, 0, 1e9) == 0.0
    with pytest.raises(ValueError):
        pooled_traffic_time(10, 32, 1, 0.0)


def test_padded_interaction_golden():
    # 5 vectors of width 4: 3 products of 2 n^2 D; a tile of 8 computes 8 x 8 blocks
    assert padded_interaction_flops(5, 4) == 3 * 2 * 25 * 4
    assert padded_interaction_flops(5, 4, 8) == 3 * 2 * 64 * 4
    assert padded_interaction_flops(16, 4, 8) == padded_interaction_flops(16, 4)  # no padding on whole tiles
    assert padded_interaction_flops(27, 128, 16) == 3 * 2 * 32 * 32 * 128


def test_input_and_dispatch_golden():
    assert input_copy_time(100, 40, 1e9) == pytest.approx(100 * 40 / 1e9)
    assert input_copy_time(100, 40, 1e9, pinned=False) == pytest.approx(100 * 40 / (1e9 * PAGEABLE_SHARE))
    assert dispatch_time(7, 2e-6) == pytest.approx(14e-6)


def test_host_step_serial_and_overlapped():
    cost = FrameworkCost(dispatch=3e-3, input=2e-3)
    serial = Implementation("s", sync_per_step=True, prefetch_input=False)
    overlapped = Implementation("o", sync_per_step=True, prefetch_input=True)
    assert host_step(10e-3, cost, serial) == pytest.approx(12e-3)  # input, then the GPU's 10 ms
    assert host_step(1e-3, cost, serial) == pytest.approx(5e-3)  # input, then the host-bound dispatch
    assert host_step(10e-3, cost, overlapped) == pytest.approx(10e-3)  # hidden behind the GPU
    assert host_step(4e-3, cost, overlapped) == pytest.approx(5e-3)  # the host's 3 + 2 ms bound it


def test_framework_cost_golden_eager():
    e = get_implementation("eager-per-table")
    c = framework_cost(e, batch=100, tables=3, pooled_values=3 * 8, dim=8, interaction_vectors=4,
                       input_bytes_per_sample=16, activation_bytes=4, hbm_bandwidth=1e9, host_bandwidth=1e8,
                       matmul_flops=1e10)
    assert (e.pooled_passes, e.grad_passes) == (8, 7)  # the April 2020 release, read op by op
    assert c.pooled == pytest.approx((8 * 4 + 7 * 4) * 100 * 24 / 1e9)
    # n = 4 padded to 64: only the padding is added (the unpadded product is in flops_per_sample)
    assert c.interaction == pytest.approx(100 * 3 * 2 * (64 * 64 - 16) * 8 / 1e10)
    assert c.dispatch == pytest.approx((3 * e.kernels_per_table + e.kernels_per_step) * e.dispatch_seconds)
    assert c.input == pytest.approx(100 * 16 / (1e8 * PAGEABLE_SHARE) + e.host_passes * 100 * 16 / HOST_COPY_BANDWIDTH)
    ideal = framework_cost(IMPLEMENTATIONS["ideal"], batch=100, tables=3, pooled_values=24, dim=8,
                           interaction_vectors=4, input_bytes_per_sample=16, activation_bytes=4, hbm_bandwidth=1e9,
                           host_bandwidth=1e8, matmul_flops=1e10)
    assert ideal == FrameworkCost()


def test_unknown_implementation_is_refused():
    with pytest.raises(ValueError, match="gpu.implementation"):
        GPUOptions(implementation="tensorflow")
    with pytest.raises(ValueError, match="activation_bytes"):
        GPUOptions(activation_bytes=0)


def _one_gpu(hardware: str, implementation: str) -> SimSpec:
    table = TableSpec("t", rows=10_000, dim=16, keys_per_sample=4, fields=4)
    spec = SimSpec(cluster=ClusterSpec(workers=1, ps=1, hardware=hardware), data=DataSpec(zipf=1.0),
                   model=ModelSpec(tables=(table,), dense_params=1000, batch_size=1024),
                   options=SimOptions(optimizer_slots=1),
                   gpu=GPUOptions(sharding="table", storage="hbm", flops_per_sample=6000, dense_state_bytes=12,
                                  implementation=implementation, interaction_vectors=5, input_bytes_per_sample=20))
    return with_gpus(spec, 1)


@pytest.mark.parametrize("hw", ["v100-dgx1", "a100-40gb-ib200", "a100-ib200", "h100-ib400"])
def test_evaluate_plan_books_the_implementation(hw):
    h = get_hardware(hw)
    ideal = evaluate_plan(_one_gpu(hw, "ideal"), (("table", "hbm"),)).step
    eager = evaluate_plan(_one_gpu(hw, "eager-per-table"), (("table", "hbm"),)).step
    e = get_implementation("eager-per-table")
    assert ideal.wait == 0.0
    # compute: + the interaction's padding (5 vectors -> 64) at peak x efficiency
    pad = 1024 * 3 * 2 * (64 * 64 - 25) * 16 / (h.peak_flops * h.mlp_efficiency)
    assert eager.compute - ideal.compute == pytest.approx(pad)
    # apply: + the 8 + 7 passes over 1024 x 4 x 16 fp32 values at the preset's HBM bandwidth
    assert eager.apply - ideal.apply == pytest.approx(15 * 1024 * 64 * 4 / h.hbm_bandwidth)
    # wait: the serial input copy (pageable, + 2 host copies), then max(GPU, dispatch)
    gpu = eager.compute + eager.apply
    inp = 1024 * 20 / (h.host_bandwidth * PAGEABLE_SHARE) + 2 * 1024 * 20 / HOST_COPY_BANDWIDTH
    disp = (4 * e.kernels_per_table + e.kernels_per_step) * e.dispatch_seconds
    assert eager.wait == pytest.approx(inp + max(gpu, disp) - gpu)
    assert eager.total > ideal.total


def test_fused_moves_fp16_activations_and_an_fp32_gradient():
    f = get_implementation("fused")
    c = framework_cost(f, batch=10, tables=1, pooled_values=8, dim=8, interaction_vectors=0,
                       input_bytes_per_sample=0, activation_bytes=2, hbm_bandwidth=1e9, host_bandwidth=1e9,
                       matmul_flops=1e9)
    assert c.pooled == pytest.approx((5 * 2 + 4 * GRAD_BYTES) * 10 * 8 / 1e9)
    assert c.interaction == 0.0 and c.input == 0.0


def test_fused_is_between_ideal_and_eager():
    steps = {i: evaluate_plan(_one_gpu("v100-dgx1", i), (("table", "hbm"),)).step.total
             for i in ("ideal", "fused", "eager-per-table")}
    assert steps["ideal"] < steps["fused"] < steps["eager-per-table"]


@pytest.mark.parametrize("path,reference,implementation", [(APRIL, 875_000, "eager-per-table"),
                                                           (JULY, 2_281_278, "fused")])
def test_published_configs_load_and_report_their_error(path, reference, implementation, capsys):
    from psrec.cli import main
    from psrec.commands.simulate import load_spec

    assert load_spec(path).gpu.implementation == implementation
    assert main(["simulate", "--config", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fits"] and out["reference"]["samples_per_s"] == reference
    assert out["collective"]["samples_per_s"] > 0  # the error is printed, not asserted
    assert main(["simulate", "--config", str(path), "--set", 'gpu.implementation="numpy"']) == 2
    err = capsys.readouterr().err
    assert "gpu.implementation" in err and "Traceback" not in err


def test_ideal_leaves_the_old_model_unchanged():
    spec = _one_gpu("h100-ib400", "ideal")
    plain = dataclasses.replace(spec, gpu=dataclasses.replace(spec.gpu, interaction_vectors=0,
                                                              input_bytes_per_sample=0))
    a = evaluate_plan(spec, (("table", "hbm"),)).step
    b = evaluate_plan(plain, (("table", "hbm"),)).step
    assert a == b
