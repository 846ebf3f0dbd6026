"""Quality metrics and timing accounting."""
from psrec.metrics.auc import auc, logloss
from psrec.metrics.timers import PhaseTimer

__all__ = ["auc", "logloss", "PhaseTimer"]
