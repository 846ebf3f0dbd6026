"""Experiments that answer one question of the design note each, on top of local training.

    incremental   `run_incremental`: how much of a long-trained model's AUC a warm-started
                  new version keeps, over drifting days
    filter_sweep  `run_filter_sweep`: how much storage admission filtering and TTL eviction
                  save, at what AUC
    zoo           every registered model on the same budget, sorted by AUC (`psrec zoo`)
    gftrl         xDeepInt's G-FTRL dense optimizer against plain FTRL (part of the zoo)
    fdo           per-field embedding widths from PCA (`psrec fdo`)
"""
from psrec.experiments.filter_sweep import FilterSetting, FilterSweepConfig, export_bytes, run_filter_sweep
from psrec.experiments.incremental import DropFields, IncrementalConfig, dense_summary, run_incremental

__all__ = [
    "IncrementalConfig", "DropFields", "run_incremental", "dense_summary",
    "FilterSetting", "FilterSweepConfig", "run_filter_sweep", "export_bytes",
]
