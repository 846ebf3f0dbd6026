"""psrec.sim cost functions: golden numbers computed by hand on tiny topologies.

Every expected value is written out as the arithmetic that produces it, from the formulas
in the modules' docstrings, so that a change of formula shows up as a failing line here.
"""
import dataclasses
import doctest
import math
import statistics

import pytest

import psrec.sim.breakdown
import psrec.sim.calibration
import psrec.sim.collective
import psrec.sim.costs
import psrec.sim.fair_share
import psrec.sim.keys
import psrec.sim.results_map
import psrec.sim.sweep
import psrec.sim.traffic
import psrec.sim.validate
from psrec.net import NetConfig
from psrec.sim import (
    Calibration,
    ClusterSpec,
    DataSpec,
    ModelSpec,
    SimOptions,
    SimSpec,
    StepCost,
    TableSpec,
    collective_step,
    compute_cost,
    hybrid_step,
    ps_async_step,
    ps_sync_step,
    ps_traffic,
    set_input,
    simulate,
)
from psrec.sim.calibration import CalibrationError
from psrec.sim.contention import busy_processes, expected_max_normal, sync_pull_queue
from psrec.sim.costs import allreduce_calls, ps_serve_time, straggler_factors
from psrec.sim.sweep import parse_values, sweep


@pytest.mark.parametrize("mod", [psrec.sim.breakdown, psrec.sim.keys, psrec.sim.collective, psrec.sim.costs,
                                 psrec.sim.traffic, psrec.sim.calibration, psrec.sim.contention,
                                 psrec.sim.sweep, psrec.sim.validate, psrec.sim.results_map, psrec.sim.fair_share])
def test_doctests(mod):
    assert doctest.testmod(mod).failed == 0


# --- compute -------------------------------------------------------------------------------


def test_compute_cost_golden():
    c = compute_cost(batch=100, seconds_per_sample=3e-4)
    assert c.total == pytest.approx(100 * 3e-4)           # 0.03 s
    assert c.forward == pytest.approx(0.03 / 3)           # 1/3 forward (2N of 6N FLOPs)
    assert c.backward == pytest.approx(0.03 * 2 / 3)
    assert compute_cost(100, 3e-4, speed=2.0).total == pytest.approx(0.015)


# --- parameter servers and modes -----------------------------------------------------------
#
# The tiny topology: one table of 4 rows with uniform keys (zipf 0), dim 2, 1 key per sample,
# batch 2, 4 dense params; 2 PS; a 1 KB/s network with 1 ms latency; compute 10 ms/sample.
# D = 4 * (1 - (3/4)^2) = 1.75 distinct keys per worker step.

D = 4 * (1 - (3 / 4) ** 2)
LAT, BW = 1e-3, 1e3
APPLY_ROW, APPLY_VAL = 1e-3, 1e-4


def tiny(workers=4, ps=2, dense_on_ps=True, imbalance=1.0, **opts):
    return SimSpec(
        cluster=ClusterSpec(workers=workers, ps=ps, net=NetConfig(bandwidth=BW, latency=LAT), ps_imbalance=imbalance),
        model=ModelSpec(name="tiny", tables=(TableSpec(rows=4, dim=2, keys_per_sample=1),), dense_params=4,
                        batch_size=2),
        data=DataSpec(zipf=0.0),
        options=SimOptions(dense_on_ps=dense_on_ps, **opts),
        calibration=Calibration(compute_per_sample={"tiny": 0.01}, apply_per_row=APPLY_ROW,
                                apply_per_value=APPLY_VAL))


def test_ps_traffic_golden():
    t = ps_traffic(tiny())
    assert t.keys == pytest.approx(D)                                  # 1.75
    assert t.request_bytes == pytest.approx(D * 8)                     # 14 B of keys
    assert t.response_bytes == pytest.approx((D * 2 + 4) * 4)          # rows + dense: 30 B
    assert t.push_bytes == pytest.approx(D * 8 + (D * 2 + 4) * 4)      # 44 B
    assert t.messages == 2                                             # dense on every PS
    assert t.shard_request_bytes == pytest.approx(D * 8 / 2)           # 7 B
    assert t.shard_response_bytes == pytest.approx((D * 2 / 2 + 4 / 2) * 4)  # 15 B
    assert t.shard_push_bytes == pytest.approx(7 + 15)
    assert t.shard_apply_rows == pytest.approx(D / 2)
    assert t.shard_apply_values == pytest.approx(D * 2 / 2 + 4 / 2)


def test_ps_sync_push_shares_the_link_from_staggered_starts():
    """With lockstep jitter the pushes reach the PS's link sigma = jitter * compute apart
    (expected order statistics) and share it fairly from there: a worker's push is the mean of
    those shares, the rest of the 4 pushes' 0.092 s it waits; the step is what it was."""
    from psrec.sim.fair_share import arrival_offsets, fair_share_durations

    base = tiny(workers=4)
    j = 0.5
    spec = dataclasses.replace(base, calibration=dataclasses.replace(base.calibration, jitter_by_mode={"ps-sync": j}))
    s, s0 = ps_sync_step(spec), ps_sync_step(base)
    own = statistics.fmean(fair_share_durations(0.092 / 4, arrival_offsets(4, j * 0.02)))
    apply = s0.apply * 4 / 3
    assert 0.046 < own < 0.092
    assert s.push == pytest.approx(own + apply / 4)
    jitter_wait = j * expected_max_normal(4) * (0.02 + 0.096 + 0.092 + apply)
    assert s.wait == pytest.approx(0.092 - own + jitter_wait)
    assert s.total == pytest.approx(s0.total + jitter_wait)


def test_ps_traffic_hash_imbalance_from_formula():
    # 2 workers, 2 shards, hash: Q2 = 4 (7/16)^2; var = W(D-Q2)/M + W^2 Q2 (M-1)/M^2; mean = W D / M
    q2 = 4 * (7 / 16) ** 2
    mean, var = 2 * D / 2, 2 * (D - q2) / 2 + 4 * q2 * 1 / 4
    t = ps_traffic(tiny(workers=2, imbalance=0.0))
    assert t.imbalance == pytest.approx((mean + math.sqrt(var) * math.sqrt(2 * math.log(2))) / mean)
    # without dense parameters a worker touches M (1 - (1 - 1/M)^D) shards
    t2 = ps_traffic(tiny(workers=2, dense_on_ps=False))
    assert t2.messages == pytest.approx(2 * (1 - 0.5 ** D))


def test_ps_sync_step_golden():
    s = ps_sync_step(tiny(workers=4))
    # k = 4 workers at once. Each phase: max(worker NIC, busiest PS NIC), NIC = msgs*1ms + bytes/1KB/s
    req = max(2 * LAT + 14 / BW, 4 * 1 * LAT + 4 * 7 / BW)        # max(0.016, 0.032)
    resp = max(2 * LAT + 30 / BW, 4 * LAT + 4 * 15 / BW)           # max(0.032, 0.064)
    push = max(2 * LAT + 44 / BW, 4 * LAT + 4 * 22 / BW)           # max(0.046, 0.092)
    # the shard probes and merges the 4 pushes' rows, 4 x D/2 = 3.5, and updates the distinct rows
    # of 4 workers x 2 keys = 8 draws over 4 rows, DU = 4 (1 - (3/4)^8) = 3.5995..., half on each
    # shard: their 2-wide values, and the dense slice once
    du = 4 * (1 - (3 / 4) ** 8)
    apply = 4 * D / 2 * APPLY_ROW + (du * 2 / 2 + 4 / 2) * APPLY_VAL  # 0.0035 + 0.0005600 = 0.0040600
    assert s.compute == pytest.approx(2 * 0.01)
    assert s.pull == pytest.approx(req + resp) and s.pull == pytest.approx(0.096)
    # the last of the 4 pushes returns after the merged apply, the other 3 workers wait for it
    # at their next pull: per worker 1/4 of the apply in push, 3/4 in apply
    # the 4 pushes take 0.092 to cross the PS's link; without jitter they start together and
    # share it fairly, so each lasts all of it (psrec.sim.fair_share) and nobody waits
    assert push == pytest.approx(0.092)
    assert s.push == pytest.approx(0.092 + apply / 4)
    assert s.wait == pytest.approx(0.0)
    assert s.apply == pytest.approx(apply * 3 / 4)
    assert apply == pytest.approx(0.004059955, rel=1e-6)
    total = 0.02 + 0.096 + 0.092 + apply                            # 0.2120600: the step is unchanged
    assert s.total == pytest.approx(total)
    assert s.comm_fraction == pytest.approx((0.096 + 0.092 + apply / 4) / total)
    assert s.throughput == pytest.approx(4 * 2 / total)
    assert s.bottleneck == "pull (ps nic)"
    # memory: 4 rows * 2 values * 4 B * 2 slots / 2 PS
    assert s.memory_per_node == pytest.approx(4 * 2 * 4 * 2 / 2)


def test_ps_sync_apply_on_shared_cores_golden():
    """ps-sync on 2 shared cores: compute runs on the 4 workers at once (4/2 = 2x slower), the
    apply on the 2 PS while the workers wait at the barrier (2/2: not slowed)."""
    base = tiny(workers=4)
    shared = dataclasses.replace(base, cluster=dataclasses.replace(base.cluster, cores=2.0))
    a, b = ps_sync_step(base), ps_sync_step(shared)
    assert b.compute == pytest.approx(2 * a.compute) and b.compute == pytest.approx(0.04)
    assert b.apply == pytest.approx(a.apply) and b.apply == pytest.approx(0.004059955 * 3 / 4, rel=1e-6)
    one_core = dataclasses.replace(base, cluster=dataclasses.replace(base.cluster, cores=1.0))
    assert ps_sync_step(one_core).apply == pytest.approx(2 * a.apply)  # 2 PS on 1 core


def test_allreduce_software_hides_only_on_free_cores_golden():
    """2 buckets of 8 B on 4 ranks (k = 2: the ring's 6 latency steps paid twice): wire =
    0.036 s. With coll_alpha = 5 ms the software is 2 buckets * 2 * 3 messages * 5 ms = 0.060 s,
    above the wire, so the rings take 0.060 in all (the link sends while gloo works). The first
    bucket's share hides under the backward pass (compute 0.1: backward 0.0667): its software
    (0.030) only where a core is free for it (share 1 on 8 shared cores, 0.5 on 6, 0 on 4), its
    wire (0.018) always; the exposed part is the larger remainder, the same on an emulated
    link (psrec.comm.nic lets a launched bucket's wire fly during backward)."""
    cal = dataclasses.replace(tiny().calibration, coll_alpha=5e-3, compute_per_sample={"tiny": 0.05})
    wire = 2 * 2 * 3 * LAT + 2 * 3 / 4 * 16 / BW                         # 0.036
    for emulated in (False, True):
        for cores, share in ((0.0, 1.0), (8.0, 1.0), (6.0, 0.5), (4.0, 0.0)):
            spec = dataclasses.replace(tiny(workers=4, emulated_net=emulated, bucket_bytes=8), calibration=cal,
                                       cluster=dataclasses.replace(tiny().cluster, workers=4, cores=cores))
            s = collective_step(spec)
            exposed = max(0.060 - 0.030 * share, wire - 0.018)               # 0.030 / 0.045 / 0.060
            assert s.allreduce == pytest.approx(exposed)
            assert s.hidden == pytest.approx(0.060 - exposed)
    # software below the wire (coll_alpha 1 ms: 0.012), a short backward (0.0133): the first
    # bucket's wire (0.018) fills the backward, whatever the cores
    cal = dataclasses.replace(tiny().calibration, coll_alpha=1e-3)
    backward = 0.02 * 2 / 3
    spec = dataclasses.replace(tiny(workers=4, bucket_bytes=8), calibration=cal,
                               cluster=dataclasses.replace(tiny().cluster, workers=4, cores=4.0))
    s = collective_step(spec)
    assert s.hidden == pytest.approx(backward)
    assert s.allreduce == pytest.approx(wire - backward)
    one = collective_step(dataclasses.replace(spec, options=dataclasses.replace(spec.options, bucket_bytes=16)))
    assert one.hidden == 0.0                                              # one bucket: the last hides nothing
    assert one.allreduce == pytest.approx(max(2 * 3 * LAT + 24 / BW, 0.006))  # the wire, 0.030, covers 6 ms of software


def test_collective_emulated_net_prices_the_allreduce_like_a_real_link():
    """psrec.comm.nic replays a launched bucket's wire from its launch, as a NIC sends it: the
    emulated and the real link give the all-reduce the same time. One 16 B bucket on 4 workers:
    0.030 s of wire, nothing to hide it; two 8 B buckets: 0.036, the first's 0.018 hides up to
    the backward pass (0.0133)."""
    for emulated in (False, True):
        s = collective_step(tiny(workers=4, emulated_net=emulated))
        assert s.allreduce == pytest.approx(2 * 3 * LAT + 2 * 3 / 4 * 16 / BW) and s.hidden == 0.0
        s2 = collective_step(tiny(workers=4, emulated_net=emulated, bucket_bytes=8))
        assert s2.hidden == pytest.approx(0.02 * 2 / 3)
        assert s2.allreduce == pytest.approx(2 * 2 * 3 * LAT + 24 / BW - 0.02 * 2 / 3)


def test_ps_async_step_golden():
    s = ps_async_step(tiny(workers=4))
    # alone at the PS (k = 1): pull = max(0.016, 0.008) + max(0.032, 0.016); push = max(0.046, 0.023)
    # plus the shard's apply of this push, which the push waits for: D/2 rows, 3.75 values
    apply = D / 2 * APPLY_ROW + 3.75 * APPLY_VAL                    # 0.000875 + 0.000375 = 0.00125
    pull, push = 0.016 + 0.032, 0.046 + apply
    own = 0.02 + pull + push                                        # 0.11525
    # busiest PS per worker step: in = 2 msgs + (7 + 22) B, out = 1 msg + 15 B; 4 workers share it
    nic_in = 2 * LAT + (7 + 22) / BW                                # 0.031
    nic_out = LAT + 15 / BW                                         # 0.016
    bound = 4 * max(nic_in, nic_out)                                # 0.124 > own: incast
    # MVA, stations (0.031, 0.016), delay own - 0.047 = 0.06825, by hand:
    #   n=1: R = (.031, .016), cycle .11525, X 8.677, Q = (.2690, .1388)
    #   n=2: R = (.03934, .01822), cycle .12581, X 15.90, Q = (.6254, .2897)
    #   n=3: R = (.05039, .02064), cycle .13927, X 21.54, Q = (1.0854, .4445)
    #   n=4: R = (.06465, .02311), cycle .15601 (above the bound 0.124: the queue below saturation)
    cycle = 0.15601
    excess = cycle - own
    assert s.total == pytest.approx(cycle, rel=1e-4)
    assert s.pull == pytest.approx(pull + excess * pull / (pull + push), rel=1e-4)
    assert s.push == pytest.approx(push + excess * push / (pull + push), rel=1e-4)
    assert s.apply == 0.0 and s.wait == 0.0
    assert s.bottleneck == "ps nic (incast)" and bound > own
    # two workers: below the bound, but they still queue at the PS link (MVA n=2 above)
    s2 = ps_async_step(tiny(workers=2))
    assert s2.total == pytest.approx(0.12581, rel=1e-4) and s2.bottleneck != "ps nic (incast)"
    # under the --net emulation no PS link is shared: the worker's own time sets the pace
    assert ps_async_step(tiny(workers=2, emulated_net=True)).total == pytest.approx(own)
    # with prefetch the compute (20 ms) hides under the communication (95 ms); delay 0.04825:
    #   n=1: cycle .09525, X 10.50, Q = (.3255, .1680); n=2: R = (.04109, .01869), cycle .10803
    s3 = ps_async_step(tiny(workers=2, overlap_ps=True))
    assert s3.hidden == pytest.approx(0.02)
    assert s3.total == pytest.approx(0.10803, rel=1e-4)


LOOKUP = 2e-3  # seconds per row the shard looks up for a pull


def with_lookup(spec, lookup=LOOKUP, cores=0.0):
    return dataclasses.replace(spec, calibration=dataclasses.replace(spec.calibration, lookup_per_row=lookup),
                               cluster=dataclasses.replace(spec.cluster, cores=cores))


def test_ps_serve_time_golden():
    """The busiest shard's lookup of one worker's pull: its D/2 rows (2 PS, imbalance 1)."""
    spec = with_lookup(tiny(workers=4))
    t = ps_traffic(spec)
    assert t.shard_lookup_rows == pytest.approx(D / 2)                 # 0.875 rows
    assert ps_serve_time(spec, t) == pytest.approx(D / 2 * LOOKUP)     # 0.875 * 2 ms = 1.75 ms
    # on 1 shared core the lookup runs `busy` times slower (processor sharing)
    one_core = with_lookup(tiny(workers=4), cores=1.0)
    assert ps_serve_time(one_core, ps_traffic(one_core), busy=3) == pytest.approx(3 * 0.00175)
    assert ps_serve_time(tiny(workers=4), ps_traffic(tiny(workers=4))) == 0.0  # uncalibrated: in alpha/beta


def test_ps_sync_step_with_lookup_golden():
    """ps-sync, 4 workers: the pull holds the busiest shard's lookup s = 1.75 ms, and the 3
    workers the apply releases at once queue for it: 0, 1, 2 serve times, mean over the 4
    workers (0 + 1 + 2) / 4 = 0.75 s (`sync_pull_queue`). Nothing else moves."""
    base, s = ps_sync_step(tiny(workers=4)), ps_sync_step(with_lookup(tiny(workers=4)))
    serve = D / 2 * LOOKUP                                              # 0.00175
    assert sync_pull_queue(4) == pytest.approx(0.75)
    assert s.pull == pytest.approx(0.096 + serve + 0.75 * serve)         # 0.0990625
    assert s.push == pytest.approx(base.push) and s.apply == pytest.approx(base.apply)
    assert s.total == pytest.approx(base.total + 1.75 * serve)
    # 2 workers: the last pusher's pull comes after the waiter's has been served, no queue
    two = ps_sync_step(with_lookup(tiny(workers=2)))
    assert two.pull == pytest.approx(ps_sync_step(tiny(workers=2)).pull + serve)
    # on 1 shared core: the 2 shards look up while the workers wait (n = M = 2), 2x slower;
    # the software alpha/beta are 0 here, so nothing else in the pull changes
    shared = ps_sync_step(with_lookup(tiny(workers=4), cores=1.0))
    assert shared.pull == pytest.approx(0.096 + 2 * serve * 1.75)


def test_ps_async_step_with_lookup_golden():
    """ps-async: the pull holds the lookup; the shard's lock serialises W workers' lookups
    and applies, so T >= W (apply + lookup) (the PS CPU bound), and the queue for the lock
    is spent inside the workers' pulls and pushes."""
    serve, apply = D / 2 * LOOKUP, D / 2 * APPLY_ROW + 3.75 * APPLY_VAL  # 0.00175, 0.00125
    s2 = ps_async_step(with_lookup(tiny(workers=2, emulated_net=True)))  # no PS link queue
    own = 0.02 + (0.016 + serve + 0.032) + (0.046 + apply)               # 0.117
    assert s2.pull == pytest.approx(0.048 + serve) and s2.total == pytest.approx(own)
    # 100 ms per row: lookup 87.5 ms; 4 workers need 4 (1.25 + 87.5) ms = 0.355 s of the shard
    big = 0.1
    s4 = ps_async_step(with_lookup(tiny(workers=4), lookup=big))
    own4 = 0.02 + (0.048 + D / 2 * big) + (0.046 + apply)                # 0.20275
    bound = 4 * (apply + D / 2 * big)                                    # 0.355 > own4, > NIC's 0.124
    assert s4.total == pytest.approx(bound)
    # the queue at the shard's lock is inside the workers' pulls and pushes, in their proportion
    pull4, push4 = 0.048 + D / 2 * big, 0.046 + apply
    assert s4.pull == pytest.approx(pull4 + (bound - own4) * pull4 / (pull4 + push4))
    assert s4.push == pytest.approx(push4 + (bound - own4) * push4 / (pull4 + push4))
    assert s4.apply == 0.0 and s4.bottleneck == "ps cpu (lookup + apply)"
    # 2 workers on 1 core: one push's apply (one pull's lookup) runs on both shards at once
    # while the other worker goes on: n = W - 1 + M = 3, 3x slower; compute n = W = 2
    sc = ps_async_step(with_lookup(tiny(workers=2, emulated_net=True), cores=1.0))
    assert busy_processes("ps-async", "apply", 2, 2) == 3.0
    assert sc.compute == pytest.approx(2 * 0.02)
    assert sc.pull == pytest.approx(0.048 + 3 * serve)
    assert sc.push == pytest.approx(0.046 + 3 * apply)


def test_hybrid_step_golden():
    s = hybrid_step(tiny(workers=4, dense_on_ps=False))
    tch = 2 * (1 - 0.5 ** D)                      # shards a worker touches
    sm = tch / 2                                  # messages the busiest shard gets per worker
    req = max(tch * LAT + 14 / BW, 4 * sm * LAT + 4 * 7 / BW)
    resp = max(tch * LAT + 14 / BW, 4 * sm * LAT + 4 * 7 / BW)      # rows only: 1.75 * 2 * 4 = 14 B
    push = max(tch * LAT + 28 / BW, 4 * sm * LAT + 4 * 14 / BW)
    ar = 2 * 3 * LAT + 2 * 3 / 4 * 16 / BW        # ring over 4 workers, 4 params * 4 B = 0.030
    inline = D / 2 * APPLY_ROW + D * APPLY_VAL    # the shard applies the push (D/2 rows, D values) before it returns
    assert s.pull == pytest.approx(req + resp)
    assert s.push == pytest.approx(push + inline)
    assert s.allreduce == pytest.approx(ar) and s.hidden == 0.0  # one bucket: nothing left to hide it
    assert s.apply == pytest.approx(4 * APPLY_VAL)       # local dense update
    assert s.total == pytest.approx(0.02 + req + resp + push + inline + ar + 4 * APPLY_VAL)
    # two 8-byte buckets: 0.036 of wire, the first bucket's half (0.018) hides up to backward
    ar2, backward = 2 * 2 * 3 * LAT + 2 * 3 / 4 * 16 / BW, 0.02 * 2 / 3
    s2 = hybrid_step(tiny(workers=4, dense_on_ps=False, bucket_bytes=8))
    assert s2.allreduce == pytest.approx(ar2 - backward) and s2.hidden == pytest.approx(backward)
    no_overlap = hybrid_step(tiny(workers=4, dense_on_ps=False, overlap_allreduce=False, bucket_bytes=8))
    assert no_overlap.allreduce == pytest.approx(ar2) and no_overlap.hidden == 0.0


def test_collective_step_golden():
    s = collective_step(tiny(workers=4))
    a2a = 3 * LAT + 3 / 4 * 16 / BW               # S_ids = 2*1*8 = 16 B, S_emb = 2*1*2*4 = 16 B: 0.015 each
    assert s.alltoall == pytest.approx(3 * a2a)   # ids + embeddings forward + gradients backward
    assert s.allreduce == pytest.approx(2 * 3 * LAT + 2 * 3 / 4 * 16 / BW)   # one bucket: all exposed
    # each owner applies the distinct rows it owns among all 4*2 lookups: 4 (1 - (3/4)^8) / 4
    rows = 4 * (1 - (3 / 4) ** 8) / 4
    assert s.apply == pytest.approx(rows * (APPLY_ROW + 2 * APPLY_VAL) + 4 * APPLY_VAL)
    assert s.pull == s.push == 0.0
    assert s.memory_per_node == pytest.approx(4 * 2 * 4 * 2 / 4)


def test_collective_per_call_software_golden():
    """coll_call is paid once per all-to-all call, coll_alpha once per peer message: with no
    network cost, on 4 ranks the 3 pooled all-to-alls cost 3 * (2 ms + 3 * 1 ms) of software,
    the one-bucket all-reduce (not packed: no coll_call) 2 * 3 * 1 ms; with 4-byte buckets the
    4 dense floats (16 B) are 4 rings."""
    free = dataclasses.replace(tiny().cluster, net=NetConfig())
    cal = dataclasses.replace(tiny().calibration, coll_call=2e-3, coll_alpha=1e-3)
    spec = dataclasses.replace(tiny(workers=4, overlap_allreduce=False), calibration=cal, cluster=free)
    base = collective_step(dataclasses.replace(tiny(workers=4, overlap_allreduce=False), cluster=free))
    s = collective_step(spec)
    assert base.alltoall == 0.0 and base.allreduce == 0.0
    assert s.alltoall == pytest.approx(3 * (0.002 + 3 * 0.001))                     # 0.015
    assert s.allreduce == pytest.approx(2 * 3 * 0.001)                              # 0.006
    assert allreduce_calls(spec) == 1
    four = dataclasses.replace(spec, options=dataclasses.replace(spec.options, bucket_bytes=4))
    assert allreduce_calls(four) == 4
    assert collective_step(four).allreduce == pytest.approx(4 * 2 * 3 * 0.001)
    assert allreduce_calls(dataclasses.replace(spec, cluster=dataclasses.replace(spec.cluster, workers=1))) == 0
    with pytest.raises(ValueError, match="bucket_bytes"):
        SimOptions(bucket_bytes=2)


def test_collective_wire_overlaps_the_library_not_the_packing_golden():
    """On the tiny link each pooled all-to-all of 16 B on 4 ranks has 3 * 1 ms + 3/4 * 16 B /
    1 KB/s = 0.015 s of wire. The library's 3 messages at 1 ms (0.003) fit inside it, the
    packing (coll_call 2 ms) does not: 3 * 0.002 more than no software at all. With 10 ms a
    message the library (0.030) outlasts the wire: 3 * (0.002 + 0.030 - 0.015) more."""
    base = collective_step(tiny(workers=4))
    assert base.alltoall == pytest.approx(3 * 0.015)
    for alpha, extra in ((1e-3, 3 * 0.002), (1e-2, 3 * (0.002 + 0.030 - 0.015))):
        cal = dataclasses.replace(tiny().calibration, coll_call=2e-3, coll_alpha=alpha)
        s = collective_step(dataclasses.replace(tiny(workers=4), calibration=cal))
        assert s.alltoall - base.alltoall == pytest.approx(extra)


def test_apply_per_call_golden():
    """A fixed cost per apply: one per push in ps-async (the push waits for it), one per step in
    ps-sync (the last pusher waits for it, the others at the barrier), one per step per rank
    in the collective (with its per-row constant calibrated)."""
    cal = dataclasses.replace(tiny().calibration, apply_per_call=0.004)
    base, spec = tiny(workers=2), dataclasses.replace(tiny(workers=2), calibration=cal)
    a0, a1 = (ps_async_step(dataclasses.replace(x, cluster=dataclasses.replace(x.cluster, workers=1)))
              for x in (base, spec))                                 # alone: no queue at the PS
    assert a1.push - a0.push == pytest.approx(0.004)
    s0, s1 = ps_sync_step(base), ps_sync_step(spec)
    assert (s1.push + s1.apply) - (s0.push + s0.apply) == pytest.approx(0.004)
    c0 = collective_step(base)
    assert collective_step(spec).apply - c0.apply == pytest.approx(0.004)    # uncalibrated: the PS constants
    ccal = dataclasses.replace(tiny().calibration, coll_apply_per_row=1e-3, coll_apply_per_step=0.002)
    c2 = collective_step(dataclasses.replace(base, calibration=ccal))
    rows = 4 * (1 - (3 / 4) ** 4) / 2                                       # distinct of 2 ranks' 2 draws, per owner
    assert c2.apply == pytest.approx(0.002 + 1e-3 * rows)


def test_stragglers_golden():
    spec = tiny(workers=2)
    spec = SimSpec(cluster=ClusterSpec(workers=2, ps=2, net=spec.cluster.net, ps_imbalance=1.0,
                                       straggler_fraction=0.5, straggler_slowdown=3.0),
                   model=spec.model, data=spec.data, options=spec.options, calibration=spec.calibration)
    # lockstep: E[max] = 1 + (3-1)(1 - 0.5^2) = 2.5; async: E = 1 + 0.5 (3-1) = 2
    assert straggler_factors(spec) == pytest.approx((2.5, 2.0))
    assert ps_sync_step(spec).wait == pytest.approx(0.02 * 1.5)
    assert collective_step(spec).wait == pytest.approx(0.02 * 1.5)
    assert ps_async_step(spec).compute == pytest.approx(0.02 * 2.0)


def test_step_cost_arithmetic():
    s = StepCost("x", compute=0.3, pull=0.2, push=0.1, allreduce=0.05, alltoall=0.05, wait=0.2, apply=0.1,
                 hidden=5.0, workers=4, batch_size=25)
    assert s.total == pytest.approx(1.0)          # hidden is not counted
    assert s.comm == pytest.approx(0.4)
    assert s.comm_fraction == pytest.approx(0.4)
    assert s.throughput == pytest.approx(100.0)
    row = s.as_row()
    assert row["step_ms"] == pytest.approx(1000) and row["comm_pct"] == pytest.approx(40)


def test_simulate_modes():
    res = simulate(tiny())
    assert list(res) == ["ps-async", "ps-sync", "hybrid", "collective"]
    assert res["ps-sync"].total >= res["ps-async"].total  # lockstep never beats async in this model
    with pytest.raises(ValueError, match="unknown mode"):
        simulate(tiny(), ("ps-magic",))


def test_spec_validation():
    with pytest.raises(ValueError, match="workers"):
        ClusterSpec(workers=0)
    with pytest.raises(ValueError, match="zipf_per_table"):
        SimSpec(data=DataSpec(zipf_per_table=(1.0, 1.1)))
    with pytest.raises(CalibrationError, match="compute_per_sample"):
        SimSpec(calibration=Calibration(compute_per_sample={"dcn": 1e-4}))
    with pytest.raises(ValueError, match="allreduce"):
        SimOptions(allreduce="butterfly")


# --- sweeps --------------------------------------------------------------------------------


def test_parse_values_and_set_input():
    assert parse_values("workers", "1..5") == [1, 2, 3, 4, 5]
    assert parse_values("workers", "1..1024:x2") == [2 ** i for i in range(11)]
    assert parse_values("ps", "2..10:+4") == [2, 6, 10]
    assert parse_values("latency", "10us,1ms") == [1e-5, 1e-3]
    assert parse_values("options.allreduce", "ring,tree") == ["ring", "tree"]
    spec = set_input(tiny(), "rows", 1e10)
    assert spec.model.tables[0].rows == 10 ** 10
    assert set_input(tiny(), "model.tables.0.dim", 8).model.tables[0].dim == 8
    assert set_input(tiny(), "options.allreduce", "tree").options.allreduce == "tree"
    with pytest.raises(ValueError, match="workerz"):
        set_input(tiny(), "workerz", 2)
    with pytest.raises(ValueError, match="integer"):
        set_input(tiny(), "workers", 2.5)


def test_sweep_over_workers_and_rows():
    spec = set_input(tiny(), "rows", 1e10)
    sw = sweep(spec, "workers", parse_values("workers", "1..1024:x2"))
    assert sw.values[0] == 1 and len(sw.costs["collective"]) == 11
    one = sw.costs["collective"][0]
    assert one.alltoall == 0.0 and one.allreduce == 0.0      # one worker: nothing to exchange
    # PS incast: ps-sync step time grows with the workers sharing 2 PS NICs
    sync = [c.total for c in sw.costs["ps-sync"]]
    assert all(b > a for a, b in zip(sync, sync[1:]))
    rows = sw.rows()
    assert rows[0]["workers"] == 1 and "ps-async comm%" in rows[0]
