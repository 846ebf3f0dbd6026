"""One training step over any EmbeddingStore: the code local, PS and collective workers share.

    lookup (sparse rows from the store)  ->  forward/backward (torch)
    ->  dense optimizer step  ->  sparse apply (summed row gradients back to the store)

A non-finite loss raises `NonFiniteLoss` before anything is applied, so a bad batch never
reaches the stored parameters.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from psrec.data.base import Batch
from psrec.embedding.layer import EmbeddingLayer, LookupResult
from psrec.embedding.store import EmbeddingStore
from psrec.metrics.timers import PhaseTimer
from psrec.models.base import CTRModel, ModelInput

__all__ = ["NonFiniteLoss", "SparseStep", "make_dense_optimizer", "sparse_grads"]


class NonFiniteLoss(FloatingPointError):
    """The loss of a batch was NaN or infinite; nothing was applied."""


def make_dense_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """torch optimizer for the model's dense parameters.

    `params` may be parameters or torch parameter groups (dicts), e.g. to give some weights
    their own FTRL l1/l2 (`psrec.experiments.zoo.xdeepint_dense_groups`).

    "ftrl" is FTRL-Proximal (`psrec.optim.FTRL`) with beta = 0, n0 = 1e-6 and no l1/l2 unless
    a group sets them: with our batch-mean loss, gradients are 1/batch_size of a summed loss's,
    and McMahan's beta = 1 (sized for per-example gradients) would pin the per-coordinate rate
    at lr for the whole run; with beta ~ 0 the rate lr / sqrt(n) is scale-free like Adagrad's.
    """
    params = list(params)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "ftrl":
        from psrec.optim import FTRL

        return FTRL(params, lr=lr, beta=0.0, l1=0.0, l2=0.0, initial_accumulator_value=1e-6)
    raise ValueError(f"unknown dense optimizer {name!r}")


def sparse_grads(res: LookupResult) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """table -> (distinct keys, summed row gradients, occurrence counts) after backward."""
    out = {}
    for name, rows in res.rows.items():
        if rows.grad is not None:  # None: a table the model did not use in this batch
            out[name] = (res.keys[name], rows.grad.numpy(), res.counts[name])
    return out


class SparseStep:
    """Train and predict a CTRModel whose embeddings live in an EmbeddingStore.

    Args:
        model: the CTR model (dense parameters only).
        layer: the EmbeddingLayer for the model's tables.
        store: where embedding rows live (local EVs, parameter servers, collective shards).
        dense_opt: optimizer over `model.parameters()`; None leaves dense parameters to the
            caller (e.g. a PS or all-reduce path that applies them elsewhere).
        timer: accumulates seconds per phase: lookup, forward_backward, dense_apply, sparse_apply.
    """

    def __init__(self, model: CTRModel, layer: EmbeddingLayer, store: EmbeddingStore,
                 dense_opt: torch.optim.Optimizer | None, timer: PhaseTimer | None = None) -> None:
        self.model = model
        self.layer = layer
        self.store = store
        self.dense_opt = dense_opt
        self.timer = timer or PhaseTimer()

    def forward_backward(self, batch: Batch, step: int) -> tuple[float, LookupResult]:
        """Lookup, forward, loss, backward. Returns the mean loss and the looked-up rows (with grads)."""
        with self.timer.phase("lookup"):
            x, res = self.layer.lookup(self.store, batch, train=True)
        return self.forward_backward_from(x, res, batch, step), res

    def forward_backward_from(self, x: ModelInput, res: LookupResult, batch: Batch, step: int) -> float:
        """Forward, loss and backward on an already looked-up input; returns the mean loss.

        Dense gradients land in `model.parameters()`, sparse ones in `res.rows[t].grad`.
        """
        self.model.train()
        with self.timer.phase("forward_backward"):
            self.model.zero_grad(set_to_none=True)
            logits = self.model(x)
            labels = torch.from_numpy(batch.labels)
            loss = F.binary_cross_entropy_with_logits(logits, labels)
            if not torch.isfinite(loss):
                raise NonFiniteLoss(
                    f"loss is {loss.item()} at step {step}, rows [{batch.start}, {batch.start + len(batch)}); "
                    "no update was applied")
            loss.backward()
        return float(loss.detach())

    def apply_sparse(self, res: LookupResult, step: int) -> None:
        """Send each table's summed row gradients to the store."""
        with self.timer.phase("sparse_apply"):
            self.store.apply_many(sparse_grads(res), step)

    def train(self, batch: Batch, step: int) -> float:
        """One full step; returns the batch's mean loss."""
        loss, res = self.forward_backward(batch, step)
        if self.dense_opt is not None:
            with self.timer.phase("dense_apply"):
                self.dense_opt.step()
        self.apply_sparse(res, step)
        return loss

    @torch.no_grad()
    def predict(self, batch: Batch) -> np.ndarray:
        """Click probabilities (B,) float64; evaluation lookups count nothing."""
        self.model.eval()
        x, _ = self.layer.lookup(self.store, batch, train=False)
        return torch.sigmoid(self.model(x)).double().numpy()
