"""Which parameter server owns a key: partitioners by name (`hash`, `balanced`)."""
from psrec.ps.partition.balanced import BalancedPartitioner
from psrec.ps.partition.base import Partitioner, count_requests, make_partitioner
from psrec.ps.partition.hash import HashModPartitioner

__all__ = ["Partitioner", "HashModPartitioner", "BalancedPartitioner", "make_partitioner", "count_requests"]
