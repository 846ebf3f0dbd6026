"""Experiments that answer one question of the design note each, on top of local training.

* `run_incremental`: how much of a long-trained model's AUC a warm-started new version keeps.
* `run_filter_sweep`: how much storage admission filtering and TTL eviction save, at what AUC.
"""
from psrec.experiments.filter_sweep import FilterSetting, FilterSweepConfig, export_bytes, run_filter_sweep
from psrec.experiments.incremental import DropFields, IncrementalConfig, dense_summary, run_incremental

__all__ = [
    "IncrementalConfig", "DropFields", "run_incremental", "dense_summary",
    "FilterSetting", "FilterSweepConfig", "run_filter_sweep", "export_bytes",
]
