"""An emulated NIC: what a rank's collective calls would have waited on a slower link.

`--net` runs on one machine, where a collective's bytes cross loopback in far less time than
the modelled link needs. A NIC puts a call's bytes on the wire while the library is inside
the call (copying, waiting for peers), and keeps sending an asynchronous all-reduce while
the rank goes on with other work; only what the wire has not finished when the rank needs
the result is waited for. So each call is replayed on one serial link per rank:

    issue i:  its bytes start at max(issued_i + shift, link free); link free = that + wire_i
    block i:  the rank needs the result at finished_i + shift; if the link finishes later,
              the rank waits the difference: delay_i, and shift += delay_i

in real-time order of the issue and block instants (`CommRecord.started`, `.finished`), with
wire_i = `psrec.net.transfer_time(net, max(sent, received), messages)` (full duplex) and
`shift` the emulated time the rank is behind its real clock. A blocking call that took
`seconds` then costs max(seconds, wire) in all, not seconds + wire; an all-reduce launched
during backward costs only the wire the backward did not cover. A call without timestamps
is charged its whole wire time after everything else (the additive model).

    >>> from psrec.comm.collectives import CommRecord
    >>> from psrec.net import NetConfig
    >>> net = NetConfig(bandwidth=1e6)                       # 1 MB/s: 1000 bytes take 1 ms
    >>> a = CommRecord("alltoall", "rows", 3000, 3000, 1, 0.001, started=0.0, finished=0.001)
    >>> b = CommRecord("alltoall", "grads", 1000, 1000, 1, 0.004, started=0.010, finished=0.014)
    >>> [round(d, 6) for d in nic_delays(net, [a, b])]        # 3 ms of wire, 1 in the call; 1 ms of wire, 4 in it
    [0.002, 0.0]
"""
from __future__ import annotations

from collections.abc import Sequence

from psrec.comm.collectives import CommRecord
from psrec.net import NetConfig, transfer_time

__all__ = ["wire_seconds", "nic_delays"]


def wire_seconds(net: NetConfig, rec: CommRecord) -> float:
    """Seconds `rec`'s bytes and messages occupy the link (sends and receives at once)."""
    if not rec.messages:
        return 0.0
    return float(transfer_time(net, max(rec.bytes_sent, rec.bytes_received), messages=rec.messages))


def nic_delays(net: NetConfig | None, records: Sequence[CommRecord]) -> list[float]:
    """Seconds each record added to the rank's time on `net` (module doc), in record order;
    all 0 without a net. Their sum is the step's emulated-network seconds."""
    delays = [0.0] * len(records)
    if net is None or not net.emulated:
        return delays
    wires = [wire_seconds(net, r) for r in records]
    events = []  # (instant, order, record): at one instant blocks go first, but never before their own issue
    for i, r in enumerate(records):
        if wires[i] <= 0.0:
            continue
        if r.started is None:
            delays[i] = wires[i]  # untimed: the additive model
            continue
        done = r.finished if r.finished is not None else r.started + r.seconds
        done = max(done, r.started)
        events += [(r.started, 1, i), (done, 0 if done > r.started else 2, i)]
    events.sort()
    shift, link_free = 0.0, float("-inf")
    wire_done = [0.0] * len(records)
    for t, kind, i in events:
        if kind == 1:  # issue
            begin = max(t + shift, link_free)
            wire_done[i] = link_free = begin + wires[i]
        else:
            late = wire_done[i] - (t + shift)
            if late > 0:
                delays[i] = late
                shift += late
    return delays
