"""A testbed of real Ray nodes on one machine: one network namespace per node, veth links to
one bridge, each link shaped with tc (`psrec cluster up/status/down`)."""
from psrec.cluster.config import TestbedConfig, TestbedError
from psrec.cluster.state import TestbedState, all_states, load_state
from psrec.cluster.testbed import down, find_by_address, interface_bytes, join, up

__all__ = ["TestbedConfig", "TestbedError", "TestbedState", "up", "down", "join", "find_by_address",
           "interface_bytes", "all_states", "load_state"]
