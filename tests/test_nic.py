"""The emulated NIC (`psrec.comm.nic`): hand-computed delays on a 1 MB/s link, where 1000
bytes take 1 ms."""
import pytest

from psrec.comm.collectives import CommRecord, ThreadGroup
from psrec.comm.nic import nic_delays
from psrec.comm.traffic import Traffic
from psrec.net import NetConfig

NET = NetConfig(bandwidth=1e6)


def call(nbytes, started, finished, op="alltoall", seconds=None, messages=1):
    secs = (finished - started) if seconds is None else seconds
    return CommRecord(op, "t", nbytes, nbytes, messages, secs, started, finished)


def test_a_blocking_call_costs_the_larger_of_its_own_time_and_the_wire():
    assert nic_delays(NET, [call(3000, 0.0, 0.001)]) == [pytest.approx(0.002)]  # 3 ms wire, 1 ms in the call
    assert nic_delays(NET, [call(1000, 0.0, 0.004)]) == [0.0]  # the wire fits inside the call


def test_an_asynchronous_launch_overlaps_the_work_before_its_wait():
    # launched at 0, waited for until 10 ms: 4 ms of wire hide, 12 ms leave 2 exposed
    assert nic_delays(NET, [call(4000, 0.0, 0.010, op="allreduce", seconds=0.0)]) == [0.0]
    assert nic_delays(NET, [call(12000, 0.0, 0.010, op="allreduce", seconds=0.0)]) == [pytest.approx(0.002)]


def test_the_link_is_serial_and_a_delay_shifts_what_follows():
    ar = call(5000, 0.0, 0.010, op="allreduce", seconds=0.0)  # wire 0-5 ms
    a2a = call(2000, 0.001, 0.002)  # its bytes wait for the link: wire 5-7 ms, needed at 2: 5 ms late
    late = call(1000, 0.003, 0.0035)  # issued at 3 + 5 = 8 ms, wire 8-9, needed at 8.5: 0.5 ms late
    d = nic_delays(NET, [ar, a2a, late])
    assert d == [0.0, pytest.approx(0.005), pytest.approx(0.0005)]  # the all-reduce is done by 10 + 5.5


def test_latency_counts_per_message_and_untimed_calls_pay_the_whole_wire():
    net = NetConfig(bandwidth=1e6, latency=1e-3)
    assert nic_delays(net, [call(0, 0.0, 0.0005, messages=2)]) == [pytest.approx(0.0015)]  # 2 ms of latency
    untimed = CommRecord("alltoall", "t", 2000, 1000, 1, 0.004)  # no instants: the additive model
    assert nic_delays(net, [untimed]) == [pytest.approx(0.003)]
    assert nic_delays(None, [untimed]) == [0.0] and nic_delays(NetConfig(), [untimed]) == [0.0]


def test_records_of_a_real_group_carry_their_instants_and_sum_into_traffic():
    import threading

    import torch

    g = ThreadGroup(2)
    works = [None, None]

    def run(r):
        c = g.member(r)
        c.all_to_all_single(torch.arange(4.0), [2, 2], [2, 2], "rows")
        works[r] = c.all_reduce(torch.ones(8), async_op=True)

    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    a2a, ar = g.member(0).log.records
    assert a2a.started <= a2a.finished and a2a.seconds == pytest.approx(a2a.finished - a2a.started)
    assert ar.finished is None  # an asynchronous launch: finished when waited for
    works[0].wait()
    assert ar.finished >= ar.started
    slow = NetConfig(bandwidth=1e3)  # 8 bytes a message pair: seconds of wire, far above the calls
    t = Traffic.of_records([a2a, ar], slow)
    assert t.emulated == pytest.approx(sum(nic_delays(slow, [a2a, ar])))
    assert t.emulated > 0.005 and t.call_seconds_by_tag["rows"] == pytest.approx(a2a.seconds)

