"""Quality metrics (AUC, logloss, DeLong's test) and the Prometheus export of a job.

    auc, logloss   held-out quality of click probabilities
    delong         DeLong's test between two models' AUCs on the same rows
    prom           `JobMetrics`: the driver's Prometheus registry and HTTP endpoint
"""
from psrec.metrics.auc import auc, logloss

__all__ = ["auc", "logloss"]
