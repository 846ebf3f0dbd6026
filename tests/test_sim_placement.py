"""GPU embedding placement: golden costs by hand (HBM lookup, cache hit rate, the GPU presets'
NVLink/IB all-to-all and hierarchical all-reduce), the memory check, and the planner against
a brute-force search over every choice and every placement on tiny cases."""
import itertools
import math

import pytest

from psrec.sim.collective import allreduce_cost, alltoall_cost
from psrec.sim.config import ClusterSpec, DataSpec, GPUOptions, ModelSpec, SimOptions, SimSpec, TableSpec
from psrec.sim.embedding_cost import cache_hit_rate, cached_lookup_cost, distinct_misses, hbm_lookup_cost
from psrec.sim.hardware import Hardware, get_hardware
from psrec.sim.placement import SHARDINGS, STORAGES, _shards, evaluate_plan, plan, with_gpus


def test_hbm_lookup_golden():
    # dim 16 fp32 = 64 B = 2 sectors; dim 4 = 16 B rounds up to one 32 B sector
    c = hbm_lookup_cost(lookups=1000, distinct=100, dim=16, hbm_bandwidth=1e9, slots=2)
    assert c.forward == pytest.approx(1000 * 64 / 1e9) and c.backward == pytest.approx(2 * 2 * 100 * 64 / 1e9)
    assert hbm_lookup_cost(10, 0, 4, 1e9).forward == pytest.approx(10 * 32 / 1e9)


def test_cache_hit_rate_golden():
    # n = 3, s = 1: H(3) = 11/6; the hottest row alone: 6/11; two rows: (3/2) / (11/6) = 9/11
    assert cache_hit_rate(3, 1.0, 1) == pytest.approx(6 / 11)
    assert cache_hit_rate(3, 1.0, 2) == pytest.approx(9 / 11)
    assert cache_hit_rate(3, 1.0, 3) == 1.0 and cache_hit_rate(3, 1.0, 0) == 0.0
    assert cache_hit_rate(10, 0.0, 3) == pytest.approx(0.3)


def test_cached_lookup_golden():
    # 2 uniform rows, cache of 1, 2 draws: D = 2 (1 - 1/4) = 1.5; the head gets 1 draw: 1 row -> 0.5 misses
    assert distinct_misses(2, 0.0, 1, 2.0) == pytest.approx(0.5)
    c = cached_lookup_cost(lookups=2, distinct=1.5, misses=0.5, hit_rate=0.5, dim=8, hbm_bandwidth=1e9,
                           host_bandwidth=1e8, slots=2)
    host = 0.5 * 2 * 32 / 1e8
    assert c.forward == pytest.approx(2 * 32 / 1e9 + host)
    assert c.backward == pytest.approx(2 * 2 * 1.5 * 32 / 1e9 + host)


def test_h100_alltoall_golden():
    # 16 H100s on 2 nodes, each GPU sends 16 MB: NVLink part 7/16 * 16e6 / 450e9; node NICs 8 x 50 GB/s,
    # node part g (n - g) / n S / (8 * 50e9) = 8 * 8/16 * 16e6 / 400e9; latency 15 * max(5 us, 3 us)
    net = get_hardware("h100-ib400").net()
    c = alltoall_cost(net, 16, 16e6, "flat", 8)
    assert c.transfer == pytest.approx(max(7 / 16 * 16e6 / 450e9, 8 * 8 / 16 * 16e6 / 400e9))
    assert c.latency == pytest.approx(15 * 5e-6)


def test_a100_hierarchical_allreduce_golden():
    # 4 A100 nodes of 8: intra 2 * 7/8 * S / 300 GB/s + 2 * 7 * 3 us; inter ring of 4 nodes over 8 x 25 GB/s
    net = get_hardware("a100-ib200").net()
    s = 20e6
    c = allreduce_cost(net, 32, s, "hierarchical", 8)
    assert c.transfer == pytest.approx(2 * 7 / 8 * s / 300e9 + 2 * 3 / 4 * s / 200e9)
    assert c.latency == pytest.approx(2 * 7 * 3e-6 + 2 * 3 * 5e-6)


TINY_HW = Hardware(name="tiny", devices_per_node=2, peak_flops=1e12, mlp_efficiency=0.5, hbm_bytes=2e4,
                   hbm_bandwidth=1e9, host_bytes=1e9, host_bandwidth=1e7, intra_bandwidth=1e9, intra_latency=1e-6,
                   inter_bandwidth=1e8, inter_latency=1e-5, step_overhead=0.0, hbm_reserve=0.0)


def tiny_spec(rows=(300, 40), dims=(8, 16), keys=(2, 1), gpus=2, zipf=1.0):
    tables = tuple(TableSpec(f"t{i}", rows=r, dim=d, keys_per_sample=k)
                   for i, (r, d, k) in enumerate(zip(rows, dims, keys)))
    spec = SimSpec(cluster=ClusterSpec(workers=gpus, ps=1, hardware="tiny"), data=DataSpec(zipf=zipf),
                   model=ModelSpec(tables=tables, dense_params=10, batch_size=4, compute_per_sample=1e-6),
                   options=SimOptions(optimizer_slots=2), gpu=GPUOptions(dense_state_bytes=16), hardware=(TINY_HW,))
    return with_gpus(spec, gpus)


def brute_force(spec):
    """Every choice, every GPU for every table- and column-wise shard: the best (fits, -step)."""
    n = spec.cluster.workers
    best = None
    opts = [(a, s) for a in SHARDINGS for s in STORAGES]
    for combo in itertools.product(opts, repeat=len(spec.model.tables)):
        shards = _shards(spec, n, combo)
        fixed = {(s.table, s.index): s.index for s in shards if combo[s.table][0] == "row" and n > 1}
        free = [(s.table, s.index) for s in shards if (s.table, s.index) not in fixed]
        for gpus in itertools.product(range(n), repeat=len(free)):
            c = evaluate_plan(spec, combo, {**fixed, **dict(zip(free, gpus))})
            if best is None or (c.fits, -c.step.total) > (best.fits, -best.step.total):
                best = c
    return best


@pytest.mark.parametrize("kw", [{}, {"rows": (1000, 40)}, {"zipf": 0.0, "keys": (3, 3)}, {"rows": (5000, 5000)}])
def test_planner_matches_brute_force(kw):
    spec = tiny_spec(**kw)
    got, want = plan(spec), brute_force(spec)
    assert got.fits == want.fits
    assert got.step.total == pytest.approx(want.step.total, rel=1e-9)


def test_plan_that_does_not_fit_is_reported():
    # 5000 rows x 16 x 4 B x 2 slots = 640 KB per table: no HBM placement fits 20 KB GPUs
    spec = tiny_spec(rows=(5000, 5000), dims=(16, 16))
    c = evaluate_plan(spec, (("table", "hbm"), ("table", "hbm")))
    assert not c.fits and any("HBM" in p for p in c.problems)
    best = plan(spec)
    assert best.fits and all(st == "cache" for _, st in best.choices)  # the cache keeps it on 2 GPUs
    assert 0 < best.tables[0].hit_rate < 1


def test_row_wise_balances_and_table_wise_concentrates():
    spec = tiny_spec(rows=(400, 400), dims=(8, 8), keys=(1, 1))
    row = evaluate_plan(spec, (("row", "hbm"), ("row", "hbm")))
    assert row.tables[0].shards == 2 and row.tables[0].rows_per_shard == 200
    table = evaluate_plan(spec, (("table", "hbm"), ("table", "hbm")))
    assert table.tables[0].shards == 1 and table.tables[0].gpus != table.tables[1].gpus  # LPT spreads them
    assert math.isfinite(row.step.total) and math.isfinite(table.step.total)
