"""What a step put on the wire: payload bytes each way, messages, and by kind.

Every transport books into one `Traffic` per step (the PS client per pull and push, a
`Collectives` member per all-to-all and all-reduce), so that every mode's `bytes_per_step`
and emulated-network seconds come from the same bookkeeping.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from psrec.comm.collectives import CommRecord
from psrec.comm.nic import nic_delays
from psrec.net import NetConfig

__all__ = ["Traffic"]


@dataclass
class Traffic:
    """Bytes and messages of one worker over some calls.

    Args:
        bytes_sent, bytes_received: payload bytes this worker put on / took off the network.
        messages: messages it sent (each pays one latency on an emulated network).
        emulated: seconds the calls would take on the emulated network (0 without one).
        bytes_by_tag: what the bytes carried (pull, push, keys, rows, grads, dense, ...) ->
            bytes sent + received.
        messages_by_tag: the same for messages.
        call_seconds_by_tag: seconds the calls blocked inside the library, by what they
            carried (`CommRecord.seconds`; 0 for an asynchronous launch): the part of a
            collective that an emulated link's wire time overlaps (`psrec.comm.nic`).
    """

    bytes_sent: int = 0
    bytes_received: int = 0
    messages: int = 0
    emulated: float = 0.0
    bytes_by_tag: dict[str, int] = field(default_factory=dict)
    messages_by_tag: dict[str, int] = field(default_factory=dict)
    call_seconds_by_tag: dict[str, float] = field(default_factory=dict)

    def add(self, tag: str, sent: int, received: int, messages: int, emulated: float = 0.0,
            call_seconds: float = 0.0) -> None:
        self.bytes_sent += sent
        self.bytes_received += received
        self.messages += messages
        self.emulated += emulated
        self.bytes_by_tag[tag] = self.bytes_by_tag.get(tag, 0) + sent + received
        self.messages_by_tag[tag] = self.messages_by_tag.get(tag, 0) + messages
        if call_seconds:
            self.call_seconds_by_tag[tag] = self.call_seconds_by_tag.get(tag, 0.0) + call_seconds

    def __iadd__(self, other: Traffic) -> Traffic:
        self.bytes_sent += other.bytes_sent
        self.bytes_received += other.bytes_received
        self.messages += other.messages
        self.emulated += other.emulated
        for mine, theirs in ((self.bytes_by_tag, other.bytes_by_tag), (self.messages_by_tag, other.messages_by_tag),
                             (self.call_seconds_by_tag, other.call_seconds_by_tag)):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v
        return self

    @classmethod
    def of_records(cls, records: Iterable[CommRecord], net: NetConfig | None = None) -> Traffic:
        """The traffic of a rank's collective calls, all of one step of one thread's group;
        with `net`, the seconds its link would have added (`psrec.comm.nic.nic_delays`).

        >>> t = Traffic.of_records([CommRecord("allreduce", "dense", 6000, 6000, 6)])
        >>> t.bytes_sent, t.messages, t.bytes_by_tag
        (6000, 6, {'dense': 12000})
        """
        records = list(records)
        out = cls()
        for r, delay in zip(records, nic_delays(net, records)):
            out.add(r.tag, r.bytes_sent, r.bytes_received, r.messages, delay, r.seconds)
        return out
