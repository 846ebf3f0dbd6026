"""`psrec.sim`: what PS, hybrid and collective training would cost on a cluster we do not have.

Pure functions and one discrete-event loop; imports numpy, the standard library, the network
model (`psrec.net`) and the straggler model (`workqueue.stragglers`, only in `des`), never
the runtime (PS actors, trainers, Ray).

    config       SimSpec = ClusterSpec + ModelSpec + DataSpec + SimOptions + Calibration
    keys         distinct keys per Zipf batch, per-shard load of hash-mod / balanced placement
    collective   alpha-beta all-reduce / all-to-all (ring, tree, hierarchical), nccl-tests busbw
    breakdown    the step-breakdown dataclasses (StepCost, ComputeCost) and compute_cost
    traffic      a PS worker's traffic and pull/push phases (PSTraffic, ps_phases, NIC time)
    costs        StepCost per mode: ps-async, ps-sync, hybrid, collective
    des          static vs dynamic task assignment under a straggler model
    sweep        costs as one input varies
    calibration  fitted constants, JSON file, least-squares fit from runs' results.json
    contention   CPU sharing, the sync pull queue, the lockstep max: workers slowing each other
    results_map  a run's results.json (any mode, any schema version) -> the fit's inputs
    validate     leave-one-out predictions of measured runs, and their error summary
    hardware     node presets (2017 Xeon PS machines, DGX A100 / H100) and user-defined [[hardware]]
    embedding_cost  HBM lookups, cache hit rate, an HBM cache over host memory
    framework_cost  what a training script's implementation adds (unfused passes, padded
                 interaction GEMMs, host dispatch, the input copy): presets ideal/fused/eager-per-table
    placement    table/row/column sharding on GPUs, the GPU job's step, the placement planner
    gpu_compare  GPU jobs against a CPU cluster: GPUs to match or double it, $ per 1M samples

Example:
    >>> from psrec.sim import SimSpec, simulate
    >>> costs = simulate(SimSpec())
    >>> sorted(costs)
    ['collective', 'hybrid', 'ps-async', 'ps-sync']
"""
from psrec.sim.calibration import Calibration, CalibrationError, fit_calibration, load_calibration, save_calibration
from psrec.sim.collective import (
    CollectiveCost,
    allgather_cost,
    allreduce_cost,
    alltoall_cost,
    bus_factor,
    reduce_scatter_cost,
)
from psrec.sim.config import ClusterSpec, DataSpec, ModelSpec, SimOptions, SimSpec, TableSpec
from psrec.sim.costs import (
    MODES,
    ComputeCost,
    PSTraffic,
    StepCost,
    collective_step,
    compute_cost,
    hybrid_step,
    ps_async_step,
    ps_phases,
    ps_serve_time,
    ps_sync_step,
    ps_traffic,
    simulate,
)
from psrec.sim.des import (
    DESResult,
    compare_policies,
    constant_speeds,
    from_stragglers,
    simulate_assignment,
    straggler_work_time,
)
from psrec.sim.keys import KeyStats, ShardLoad, key_stats, shard_load, touched_shards, zipf_normalizer

# `sweep` (the function) stays in psrec.sim.sweep: re-exported here it would hide the module.
from psrec.sim.sweep import Sweep, parse_values, set_input

__all__ = [
    "Calibration", "CalibrationError", "fit_calibration", "load_calibration", "save_calibration",
    "CollectiveCost", "allgather_cost", "allreduce_cost", "alltoall_cost", "bus_factor", "reduce_scatter_cost",
    "ClusterSpec", "DataSpec", "ModelSpec", "SimOptions", "SimSpec", "TableSpec",
    "MODES", "ComputeCost", "PSTraffic", "StepCost", "collective_step", "compute_cost", "hybrid_step",
    "ps_async_step", "ps_phases", "ps_serve_time", "ps_sync_step", "ps_traffic", "simulate",
    "DESResult", "compare_policies", "constant_speeds", "from_stragglers", "simulate_assignment",
    "straggler_work_time",
    "KeyStats", "ShardLoad", "key_stats", "shard_load", "touched_shards", "zipf_normalizer",
    "Sweep", "parse_values", "set_input",
]
