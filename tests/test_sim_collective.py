"""psrec.sim.collective: the alpha-beta costs of all-reduce, all-to-all, reduce-scatter and
all-gather, and the nccl-tests bus-bandwidth definitions. Golden numbers computed by hand
(the arithmetic is written out), as in tests/test_sim_costs.py.
"""
import pytest

from psrec.net import NetConfig
from psrec.sim import allgather_cost, allreduce_cost, alltoall_cost, bus_factor, reduce_scatter_cost

# --- collectives ---------------------------------------------------------------------------

NET = NetConfig(bandwidth=1e9, latency=1e-5)
NET2 = NetConfig(bandwidth=1e9, latency=1e-5, intra_bandwidth=1e10, intra_latency=1e-6)


def test_ring_allreduce_golden():
    c = allreduce_cost(NET, 4, 4e6, "ring")
    assert c.latency == pytest.approx(2 * 3 * 1e-5)              # 2(n-1) alpha
    assert c.transfer == pytest.approx(2 * 3 / 4 * 4e6 / 1e9)    # 2(n-1)/n S beta = 6 ms
    assert c.algbw == pytest.approx(4e6 / (6e-5 + 6e-3))
    assert c.busbw == pytest.approx(c.algbw * 2 * 3 / 4)


def test_tree_allreduce_golden():
    c = allreduce_cost(NET, 4, 4e6, "tree")
    # binomial reduce + broadcast: 2 ceil(log2 4) = 4 steps of (alpha + S beta)
    assert c.latency == pytest.approx(4 * 1e-5)
    assert c.transfer == pytest.approx(4 * 4e6 / 1e9)
    c5 = allreduce_cost(NET, 5, 1.0, "tree")
    assert c5.latency == pytest.approx(2 * 3 * 1e-5)           # ceil(log2 5) = 3


def test_hierarchical_allreduce_golden():
    # 8 ranks, 4 per node -> 2 nodes; S = 8 MB
    c = allreduce_cost(NET2, 8, 8e6, "hierarchical", per_node=4)
    # intra RS + AG: 2(g-1) alpha_i + 2(g-1)/g S beta_i; inter ring of the node's S: 2(N-1) alpha_e + 2(N-1)/N S beta_e
    assert c.latency == pytest.approx(2 * 3 * 1e-6 + 2 * 1 * 1e-5)
    assert c.transfer == pytest.approx(2 * 3 / 4 * 8e6 / 1e10 + 2 * 1 / 2 * 8e6 / 1e9)
    # the flat ring on the same machines runs at the slowest link
    flat = allreduce_cost(NET2, 8, 8e6, "ring", per_node=4)
    assert flat.latency == pytest.approx(2 * 7 * 1e-5)
    assert flat.transfer == pytest.approx(2 * 7 / 8 * 8e6 / 1e9)
    auto = allreduce_cost(NET2, 8, 8e6, "auto", per_node=4)
    assert auto.time == pytest.approx(min(c.time, flat.time, allreduce_cost(NET2, 8, 8e6, "tree", 4).time))
    # one node: hierarchical = the intra-node ring
    one = allreduce_cost(NET2, 4, 8e6, "hierarchical", per_node=4)
    assert one.time == pytest.approx(2 * 3 * 1e-6 + 2 * 3 / 4 * 8e6 / 1e10)


def test_alltoall_golden():
    c = alltoall_cost(NET, 4, 4e6)
    assert c.latency == pytest.approx(3 * 1e-5)                 # (n-1) alpha
    assert c.transfer == pytest.approx(3 / 4 * 4e6 / 1e9)       # (n-1)/n S beta
    # 8 ranks, 4 per node: the node NIC carries g (n-g)/n S = 4*4/8 S, intra (g-1)/n S
    f = alltoall_cost(NET2, 8, 8e6, "flat", per_node=4)
    assert f.latency == pytest.approx(7 * 1e-5)
    assert f.transfer == pytest.approx(max(3 / 8 * 8e6 / 1e10, 4 * 4 / 8 * 8e6 / 1e9))
    h = alltoall_cost(NET2, 8, 8e6, "hierarchical", per_node=4)
    assert h.latency == pytest.approx(3 * 1e-6 + 1 * 1e-5)      # (g-1) alpha_i + (N-1) alpha_e
    assert h.transfer == pytest.approx(3 / 4 * 8e6 / 1e10 + 4 * 1 / 2 * 8e6 / 1e9)


def test_reduce_scatter_allgather_golden():
    rs = reduce_scatter_cost(NET, 4, 4e6)
    ag = allgather_cost(NET, 4, 4e6)
    for c in (rs, ag):
        assert c.latency == pytest.approx(3 * 1e-5)
        assert c.transfer == pytest.approx(3 / 4 * 4e6 / 1e9)
    assert rs.busbw == pytest.approx(4e6 / rs.time * 3 / 4)


@pytest.mark.parametrize("n", [2, 4, 7, 64])
def test_busbw_equals_link_bandwidth_without_latency(n):
    # nccl-tests defines busbw so that it is the link bandwidth for bandwidth-optimal algorithms
    net = NetConfig(bandwidth=2.5e9, latency=0.0)
    assert allreduce_cost(net, n, 1e8, "ring").busbw == pytest.approx(2.5e9)
    assert alltoall_cost(net, n, 1e8).busbw == pytest.approx(2.5e9)
    assert allgather_cost(net, n, 1e8).busbw == pytest.approx(2.5e9)


def test_bus_factors_and_single_rank():
    assert bus_factor("allreduce", 8) == pytest.approx(2 * 7 / 8)
    assert bus_factor("alltoall", 8) == bus_factor("allgather", 8) == bus_factor("reducescatter", 8) == 7 / 8
    assert bus_factor("broadcast", 8) == 1.0
    assert allreduce_cost(NET, 1, 1e9).time == 0.0
    assert alltoall_cost(NET, 1, 1e9).time == 0.0
    with pytest.raises(ValueError, match="algorithm"):
        allreduce_cost(NET, 4, 1.0, "butterfly")
