"""Optimizers the reference training recipes need beyond torch's own."""
from psrec.optim.ftrl import FTRL

__all__ = ["FTRL"]
