"""The embedding-variable (EV) core: hash-keyed embedding tables with DeepRec semantics.

numpy and torch only (no Ray, no gRPC): parameter servers, collective workers and the local
store all sit on top of it.

* `EmbeddingVariable`: lookup / apply_gradients / evict / snapshot / export / restore.
* `EVConfig` and its sections: initializer, sparse optimizer, admission filter, eviction.
* `HashTable`: the vectorised int64 -> row map underneath.
* Raw batches (`unique`, `expand`, `segment_sum`): a batch's key draws to distinct keys and
  back, the gradient of repeated draws summed by the same inverse; or, in one compiled call
  with no sort, `EmbeddingVariable.lookup_raw` / `apply_raw` (`psrec.ev.raw`).
* The hot loops (hash probe, lookup gather, fused SGD/Adagrad apply) are compiled with numba
  in the private `_kernels` module, cached on disk after a process's first call.
* Export format (`save_snapshot`, `load_snapshot`; docs/ev-format.md) and re-sharding.
* Warm start of tables (`warm_start`) and of dense torch parameters (`warm_start_dense`).
"""
from psrec.ev.bloom import BloomFilter, CountingBloomFilter, bloom_size
from psrec.ev.config import EVConfig, FilterConfig, InitializerConfig, OptimizerConfig
from psrec.ev.dedup import Unique, expand, segment_sum, unique
from psrec.ev.export import FORMAT_VERSION, EVSnapshot, load_snapshot, save_snapshot
from psrec.ev.filters import AdmissionFilter, CounterFilter, NoFilter, filter_kinds, make_filter
from psrec.ev.hashtable import HashTable
from psrec.ev.initializers import initial_rows
from psrec.ev.optim import SlotSpec, SparseOptimizer, make_optimizer, optimizer_names
from psrec.ev.partition import Partition, hash_mod_partition, hash_mod_shard
from psrec.ev.raw import RawBatch
from psrec.ev.variable import EmbeddingVariable, EvictionReport, EVStats
from psrec.ev.warmstart import (
    DenseWarmStartReport,
    TableMigration,
    WarmStartReport,
    warm_start,
    warm_start_dense,
    warm_start_variable,
)

__all__ = [
    "EmbeddingVariable", "EvictionReport", "EVStats",
    "EVConfig", "InitializerConfig", "OptimizerConfig", "FilterConfig",
    "HashTable", "initial_rows",
    "Unique", "unique", "expand", "segment_sum", "RawBatch",
    "AdmissionFilter", "NoFilter", "CounterFilter", "BloomFilter", "CountingBloomFilter", "bloom_size",
    "make_filter", "filter_kinds",
    "SparseOptimizer", "SlotSpec", "make_optimizer", "optimizer_names",
    "EVSnapshot", "save_snapshot", "load_snapshot", "FORMAT_VERSION",
    "Partition", "hash_mod_shard", "hash_mod_partition",
    "warm_start", "warm_start_variable", "WarmStartReport", "TableMigration",
    "warm_start_dense", "DenseWarmStartReport",
]
