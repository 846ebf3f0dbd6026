"""Dense per-coordinate FTRL-Proximal (McMahan et al., "Ad Click Prediction: a View from the
Trenches", KDD 2013, Algorithm 1), for torch parameters.

Per coordinate, with gradient g and the current weight w:

    sigma = (sqrt(n + g^2) - sqrt(n)) / alpha
    z    += g - sigma * w
    n    += g^2
    w     = 0                                                  if |z| <= l1
          = -(z - sign(z) * l1) / ((beta + sqrt(n)) / alpha + l2)   otherwise

The L1 term makes weights exactly zero, which is why xDeepInt trains its PIN weights with it
(lr 0.02, l1 0.1, l2 0.1 in the author's recipe).

Relation to TensorFlow's `tf.train.FtrlOptimizer` (which the xDeepInt reference calls): TF has
no beta, starts the accumulator n at 0.1 and applies its l2 as l2 * w^2, i.e. 2 * l2 in the
denominator above. `FTRL(lr=a, beta=0.0, l1=l1, l2=2 * l2_tf, initial_accumulator_value=0.1)`
reproduces TF's update; the defaults here are McMahan's (beta = 1, n starts at 0).

A weight's starting value survives only through the -sigma * w term of its first update: like
any FTRL-Proximal, the method re-derives weights from (z, n), so a coordinate whose gradient
stays exactly zero becomes zero at the first step.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["FTRL"]


class FTRL(torch.optim.Optimizer):
    """FTRL-Proximal over dense gradients; state per parameter: z and n, shaped like it.

    Args:
        params: parameters or parameter groups.
        lr: alpha, the per-coordinate learning-rate scale.
        beta: smoothing of the per-coordinate rate (beta + sqrt(n)) / alpha.
        l1: L1 strength; coordinates with |z| <= l1 are exactly zero.
        l2: L2 strength.
        initial_accumulator_value: starting n (TF uses 0.1).

    Example:
        >>> w = torch.nn.Parameter(torch.zeros(3))
        >>> opt = FTRL([w], lr=0.5, l1=0.0, l2=0.0)
        >>> w.grad = torch.tensor([1.0, -2.0, 0.0]); opt.step()
        >>> [round(v, 4) for v in w.tolist()]  # -alpha * z / (beta + sqrt(n)) per coordinate
        [-0.25, 0.3333, 0.0]
    """

    def __init__(self, params: Iterable, lr: float = 0.02, beta: float = 1.0, l1: float = 0.1,
                 l2: float = 0.1, initial_accumulator_value: float = 0.0) -> None:
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        for name, value in (("beta", beta), ("l1", l1), ("l2", l2),
                            ("initial_accumulator_value", initial_accumulator_value)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if beta == 0 and initial_accumulator_value == 0 and l2 == 0:
            # the denominator (beta + sqrt(n)) / alpha + l2 would be 0 for a coordinate with no gradient yet
            raise ValueError("one of beta, l2, initial_accumulator_value must be > 0")
        defaults = dict(lr=lr, beta=beta, l1=l1, l2=l2, initial_accumulator_value=initial_accumulator_value)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            alpha, beta, l1, l2 = group["lr"], group["beta"], group["l1"], group["l2"]
            for w in group["params"]:
                if w.grad is None:
                    continue
                g = w.grad
                if g.is_sparse:
                    raise RuntimeError("FTRL here is dense; use the embedding store's own optimizer for sparse rows")
                state = self.state[w]
                if not state:
                    state["z"] = torch.zeros_like(w)
                    state["n"] = torch.full_like(w, group["initial_accumulator_value"])
                z, n = state["z"], state["n"]
                n_new = n + g * g
                sigma = (n_new.sqrt() - n.sqrt()) / alpha
                z.add_(g - sigma * w)
                n.copy_(n_new)
                denom = (beta + n.sqrt()) / alpha + l2
                w.copy_(torch.where(z.abs() <= l1, torch.zeros_like(w), -(z - z.sign() * l1) / denom))
        return loss
