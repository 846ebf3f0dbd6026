"""DynInt (Yan & Li, arXiv 2301.08139, 2023): xDeepInt's PIN with instance-dependent interactions.

Static PIN layer:  X_l = X_{l-1} * (W_l X_0) + X_{l-1}, X_0 = split(E, h) (B, n, k), n = m*h.
DynInt makes layer l depend on the instance x = [flat(E) ; dense] through a network G_l(x):

    da   dynamic activation:  X_l = (X_{l-1} * (W_l X_0)) * G_l(x) + X_{l-1}      G_l(x) in (0, 2)^n
    dp   dynamic parameter:   X_l = X_{l-1} * ((G_l(x) * W_l) X_0) + X_{l-1}      G_l(x) in (0, 2)^(n x n)
    dgp  gated low rank:      W_l(x) = U_l diag(G_l(x)) V_l^T                      G_l(x) in (0, 2)^r
    dwp  generated weights:   W_l(x) = U_l(x) V_l(x)^T, [U_l(x), V_l(x)] = H_l(x)  (n x r each)

G_l and H_l are 2-layer DNNs (Linear -> ReLU -> Linear) on stop_gradient(x): the loss trains
the gate/generator weights but sends no gradient back through them into the embeddings, which
are trained by the interaction path alone. Gates end in 2*sigmoid: a zero pre-activation gives 1
(the static PIN), and a gate can both damp and amplify. Logit: the xDeepInt read-out.

No public code exists; the equations of the project's design note are the spec. Choices made
here, each a reading of that spec:
  * one gate network per layer (the note indexes G by layer), none shared;
  * DA gates per row of X (one value per (sub-space, field), shared over the k positions),
    not per element: the same granularity at which W mixes;
  * DGP gates the r "singular values" of a static rank-r factorisation U diag(g) V^T;
  * DWP generates the rank-r factors themselves. A full n x n generated W would cost
    n^2 generator outputs per layer; rank r keeps it 2*n*r. The generator ends in a plain
    Linear, not 2*sigmoid: generated weights need both signs, and a (0, 2) range would make
    every mixing weight positive;
  * dense features join the gate input and the read-out, like every other model here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from psrec.models.base import CTRModel, FeatureSpec, ModelInput
from psrec.models.pin import FieldLinearOutput, subspace_merge, subspace_split
from psrec.models.registry import register

__all__ = ["DynIntParams", "DynInt"]


@dataclass(frozen=True)
class DynIntParams:
    """Hyperparameters of DynInt."""

    mode: Literal["da", "dp", "dgp", "dwp"] = "da"  # DA is the cheapest mode: n gate outputs per layer
    num_layers: int = 4  # L, as in the xDeepInt reference DynInt extends
    num_subspaces: int = 4  # h; see XDeepIntParams: 4 divides the usual widths and fits 2 cores
    gate_hidden: int = 64  # hidden width of each 2-layer gate; the paper's is not public
    rank: int = 8  # r of DGP/DWP; not public either; r << n = m*h is the point of low rank

    def __post_init__(self) -> None:
        if self.mode not in ("da", "dp", "dgp", "dwp"):
            raise ValueError(f"mode must be one of da, dp, dgp, dwp, got {self.mode!r}")
        for name in ("num_layers", "num_subspaces", "gate_hidden", "rank"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class _TwoLayer(nn.Module):
    """Linear -> ReLU -> Linear, ending in 2*sigmoid for gates or nothing for generators.

    ctx (B, in_dim) -> (B, out_dim).
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, gate: bool) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))
        self.gate = gate

    def forward(self, ctx: torch.Tensor) -> torch.Tensor:
        out = self.net(ctx)
        return 2.0 * torch.sigmoid(out) if self.gate else out


class _DynamicLayer(nn.Module):
    """A PIN layer whose mixing depends on `dyn`, the output of its own gate network.

    `dynamic(ctx)` computes dyn from the (already detached) instance; `forward(x_prev, x0, dyn)`
    applies the layer, so a test can feed it a fixed gate.
    """

    net: _TwoLayer

    def dynamic(self, ctx: torch.Tensor) -> torch.Tensor:
        return self.net(ctx)

    def forward(self, x_prev: torch.Tensor, x0: torch.Tensor, dyn: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class _DALayer(_DynamicLayer):
    """X_l = (X_{l-1} * (W X_0)) * g + X_{l-1}; dyn g (B, n) scales row i of the interaction."""

    def __init__(self, n: int, ctx_dim: int, hidden: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n, n)))
        self.net = _TwoLayer(ctx_dim, hidden, n, gate=True)

    def forward(self, x_prev: torch.Tensor, x0: torch.Tensor, dyn: torch.Tensor) -> torch.Tensor:
        mixed = torch.einsum("ij,bjk->bik", self.weight, x0)  # (B, n, k)
        return x_prev * mixed * dyn.unsqueeze(-1) + x_prev


class _DPLayer(_DynamicLayer):
    """X_l = X_{l-1} * ((G * W) X_0) + X_{l-1}; dyn G (B, n*n) gates every entry of W."""

    def __init__(self, n: int, ctx_dim: int, hidden: int) -> None:
        super().__init__()
        self.n = n
        self.weight = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n, n)))
        self.net = _TwoLayer(ctx_dim, hidden, n * n, gate=True)

    def forward(self, x_prev: torch.Tensor, x0: torch.Tensor, dyn: torch.Tensor) -> torch.Tensor:
        w = dyn.view(-1, self.n, self.n) * self.weight  # (B, n, n): one W per instance
        return x_prev * torch.bmm(w, x0) + x_prev


class _DGPLayer(_DynamicLayer):
    """W(x) = U diag(g) V^T; dyn g (B, r). Costs O(n r k) per instance, never forms W."""

    def __init__(self, n: int, ctx_dim: int, hidden: int, rank: int) -> None:
        super().__init__()
        self.u = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n, rank)))
        self.v = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n, rank)))
        self.net = _TwoLayer(ctx_dim, hidden, rank, gate=True)

    def forward(self, x_prev: torch.Tensor, x0: torch.Tensor, dyn: torch.Tensor) -> torch.Tensor:
        low = torch.einsum("jr,bjk->brk", self.v, x0) * dyn.unsqueeze(-1)  # (B, r, k)
        mixed = torch.einsum("ir,brk->bik", self.u, low)  # (B, n, k)
        return x_prev * mixed + x_prev


class _DWPLayer(_DynamicLayer):
    """W(x) = U(x) V(x)^T with dyn = [U(x) ; V(x)] (B, 2*n*r) from a linear-headed generator."""

    def __init__(self, n: int, ctx_dim: int, hidden: int, rank: int) -> None:
        super().__init__()
        self.n, self.rank = n, rank
        self.net = _TwoLayer(ctx_dim, hidden, 2 * n * rank, gate=False)

    def forward(self, x_prev: torch.Tensor, x0: torch.Tensor, dyn: torch.Tensor) -> torch.Tensor:
        u, v = dyn.view(-1, 2, self.n, self.rank).unbind(1)  # (B, n, r) each
        low = torch.einsum("bjr,bjk->brk", v, x0)  # (B, r, k)
        return x_prev * torch.bmm(u, low) + x_prev


@register("dynint")
class DynInt(CTRModel):
    """PIN with instance-dependent gates or weights; see the module docstring for each mode.

    Needs one embedding width d, divisible by `num_subspaces`. E (B, m, d) -> (B,).

    Example:
        >>> m = DynInt(FeatureSpec(3, (4, 4, 4)), DynIntParams(mode="dgp", num_layers=2, num_subspaces=2))
        >>> m(ModelInput([torch.randn(5, 4)] * 3, torch.zeros(5, 0))).shape
        torch.Size([5])
    """

    Params = DynIntParams

    def __init__(self, spec: FeatureSpec, params: DynIntParams | None = None) -> None:
        super().__init__(spec, params)
        p = self.params
        if spec.embed_dim % p.num_subspaces:
            raise ValueError(f"embedding width {spec.embed_dim} is not divisible by num_subspaces={p.num_subspaces}")
        n = spec.num_fields * p.num_subspaces
        ctx_dim = spec.flat_dim + spec.num_dense
        make = {
            "da": lambda: _DALayer(n, ctx_dim, p.gate_hidden),
            "dp": lambda: _DPLayer(n, ctx_dim, p.gate_hidden),
            "dgp": lambda: _DGPLayer(n, ctx_dim, p.gate_hidden, p.rank),
            "dwp": lambda: _DWPLayer(n, ctx_dim, p.gate_hidden, p.rank),
        }[p.mode]
        self.layers = nn.ModuleList(make() for _ in range(p.num_layers))
        self.out = FieldLinearOutput(spec.num_fields, spec.num_dense)

    def gate_input(self, x: ModelInput) -> torch.Tensor:
        """The instance as the gates see it: [flat(E) ; dense] (B, sum D_f + num_dense), detached."""
        return torch.cat([x.flat(), x.dense], dim=1).detach()

    def dynamics(self, x: ModelInput) -> list[torch.Tensor]:
        """Each layer's gate (or generated factors), computed from the detached instance."""
        ctx = self.gate_input(x)
        return [layer.dynamic(ctx) for layer in self.layers]

    def forward(self, x: ModelInput) -> torch.Tensor:
        h = self.params.num_subspaces
        x0 = subspace_split(x.stacked(), h)  # (B, n, k)
        xl = x0
        for layer, dyn in zip(self.layers, self.dynamics(x)):
            xl = layer(xl, x0, dyn)  # (B, n, k)
        return self.out(subspace_merge(xl, h), x.dense)  # (B,)
