"""EulerNet (Tian et al., "EulerNet: Adaptive Feature Interaction Learning via Euler's Formula for
CTR Prediction", SIGIR 2023; reference Ethan-TZ/EulerNet `Model/EulerNet.py`, FuxiCTR
`model_zoo/EulerNet`).

Every field embedding is read as the phase of a complex vector, z_f = mu_f e^{i e_f}, i.e.
r = mu cos(E), p = mu sin(E) (B, m, d), mu (m,) learned. In polar form a product of powers is
linear: prod_f z_f^{a_f} = exp(sum_f a_f (log|z_f| + i arg z_f)), so a layer with "order" matrix
A (m_in x m_out) learns interactions of any real order:

    lambda = log|z| = 1/2 log(r^2 + p^2),  theta = atan2(p, r)              (B, m_in, d)
    lambda'_j = exp(sum_f A_fj lambda_f + b^lambda_j),  theta'_j = sum_f A_fj theta_f + b^theta_j
    explicit:  lambda' cos(theta'),  lambda' sin(theta')                        (B, m_out, d)
    implicit:  ReLU(Linear(flat r)),  ReLU(Linear(flat p))  (one Linear shared by r and p)
    out:       r' = implicit_r + explicit_r,  p' = implicit_p + explicit_p  [LayerNorm over d]
    logit = Linear(flat r_L) + Linear(flat p_L)  (one Linear shared by both) (+ w_d^T dense)

The explicit part equals exp(sum_f A_fj Log z_f + b^lambda_j + i b^theta_j) with the principal
complex logarithm (tested against cmath). Initialisation follows the author's code: A = I when
m_in == m_out, otherwise near one-hot columns softmax(randn / 0.01); biases ~ N(0, 0.01^2);
implicit weights ~ N(0, 0.01^2).

Defaults, and why. Measured with `psrec zoo`'s budget (300K synthetic rows, one pass, Adagrad
0.03 embeddings initialised N(0, 0.01^2), Adam 1e-3 dense), paired with LR on the same seed,
held-out AUC for train.seed 0 / 1 / 2 (LR: 0.7523 / 0.7502 / 0.7529):

    reference Criteo setting (LayerNorm, FuxiCTR's xavier implicit init)  0.7507 / 0.7476 / 0.7451
    these defaults (no LayerNorm, the author's N(0, 0.01^2) implicit init)  0.7550 / 0.7518 / 0.7555

- Implicit weights N(0, 0.01^2) as in the author's code, not FuxiCTR's xavier_uniform. Phases
  start near 0, so r = mu cos(E) is nearly the constant mu for every sample and a xavier-sized
  implicit Linear (shared by r and p) adds a large sample-independent term that the layer must
  unlearn first. Seed 0, with LayerNorm: AUC 0.7500 -> 0.7523, train loss 0.5215 -> 0.5153.
- No LayerNorm (the reference's `apply_norm`: off in the author's MovieLens config, the one
  that trains at Adam 1e-3 as here; on for Criteo and Avazu at Adam 1e-4 over many epochs).
  LayerNorm over d makes a field's output independent of its vector's length, so a key's
  evidence can only sit in the direction of its phases: a key updated twice speaks as loudly
  as one updated a thousand times, and a near-zero, barely trained row is blown up to unit
  scale (tested). Without it a near-zero row contributes near nothing, as in LR or a DNN.
  The cost: held-out logloss 0.516-0.520 vs 0.510-0.514 with it (worse calibrated; not
  investigated further) while the ranking improves. `layer_norm=True` restores the reference's.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from psrec.models.base import CTRModel, FeatureSpec, ModelInput
from psrec.models.registry import register

__all__ = ["EulerNetParams", "EulerNet", "EulerInteraction", "IMPLICIT_INIT_STD"]

IMPLICIT_INIT_STD = 0.01  # the author's std for the implicit Linear's weights


@dataclass(frozen=True)
class EulerNetParams:
    """Hyperparameters of EulerNet."""

    num_layers: int = 2  # reference Criteo order_list [39, 39]: two layers
    # m_out of every layer; 0 means "one per field" (m), which is the reference's Criteo choice
    # (39 orders for 39 fields) and starts each layer at the identity.
    orders_per_layer: int = 0
    ex_dropout: float = 0.0  # reference Criteo 0.1; short synthetic runs learn faster without
    im_dropout: float = 0.0  # reference Criteo 0.2 (FuxiCTR 0.1); same reason
    # The author's MovieLens config (Adam 1e-3, as here): False; Criteo, Avazu (Adam 1e-4): True.
    # See the module docstring ("Defaults").
    layer_norm: bool = False

    def __post_init__(self) -> None:
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")
        if self.orders_per_layer < 0:
            raise ValueError(f"orders_per_layer must be >= 0 (0: one per field), got {self.orders_per_layer}")
        for name in ("ex_dropout", "im_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


class EulerInteraction(nn.Module):
    """One Euler interaction layer: (r, p) (B, m_in, d) -> (r', p') (B, m_out, d).

    Args:
        m_in, m_out: complex vectors in and out (the number of learned orders).
        dim: d.
        ex_dropout, im_dropout: dropout on (lambda, theta) and on (r, p) before the implicit Linear.
        layer_norm: LayerNorm over d on r' and p' (separate norms).
    """

    def __init__(self, m_in: int, m_out: int, dim: int, ex_dropout: float = 0.0,
                 im_dropout: float = 0.0, layer_norm: bool = True) -> None:
        super().__init__()
        if m_in == m_out:
            init = torch.eye(m_in)
        else:
            init = torch.softmax(torch.randn(m_in, m_out) / 0.01, dim=0)
        self.orders = nn.Parameter(init)  # A (m_in, m_out)
        self.bias_lam = nn.Parameter(torch.randn(m_out, dim) * 0.01)
        self.bias_theta = nn.Parameter(torch.randn(m_out, dim) * 0.01)
        self.implicit = nn.Linear(m_in * dim, m_out * dim)
        # The author's N(0, 0.01^2) (FuxiCTR: xavier_uniform, std 0.049 at m_in = m_out = 416):
        # the layer then starts as its explicit part, the identity for A = I. See "Defaults".
        nn.init.normal_(self.implicit.weight, std=IMPLICIT_INIT_STD)
        self.drop_ex = nn.Dropout(ex_dropout)
        self.drop_im = nn.Dropout(im_dropout)
        self.norm_r = nn.LayerNorm(dim) if layer_norm else nn.Identity()
        self.norm_p = nn.LayerNorm(dim) if layer_norm else nn.Identity()
        self.m_out, self.dim = m_out, dim

    def explicit(self, r: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Real and imaginary parts of prod_f z_f^{A_fj} e^{b_j}: (B, m_in, d) -> (B, m_out, d) twice."""
        lam = 0.5 * torch.log(r * r + p * p + 1e-8)  # log|z|; 1e-8 keeps z = 0 finite
        theta = torch.atan2(p, r)
        lam, theta = self.drop_ex(lam), self.drop_ex(theta)
        lam = torch.exp(torch.einsum("bfd,fj->bjd", lam, self.orders) + self.bias_lam)
        theta = torch.einsum("bfd,fj->bjd", theta, self.orders) + self.bias_theta
        return lam * torch.cos(theta), lam * torch.sin(theta)

    def forward(self, r: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ex_r, ex_p = self.explicit(r, p)
        b = r.shape[0]
        im_r = torch.relu(self.implicit(self.drop_im(r.reshape(b, -1)))).view(b, self.m_out, self.dim)
        im_p = torch.relu(self.implicit(self.drop_im(p.reshape(b, -1)))).view(b, self.m_out, self.dim)
        return self.norm_r(im_r + ex_r), self.norm_p(im_p + ex_p)


@register("eulernet")
class EulerNet(CTRModel):
    """Stacked Euler interaction layers with a shared linear read-out of both parts.

    Needs one embedding width d. E (B, m, d) -> logits (B,).

    Example:
        >>> m = EulerNet(FeatureSpec(3, (4, 4, 4)), EulerNetParams(num_layers=1))
        >>> m(ModelInput([torch.randn(5, 4)] * 3, torch.zeros(5, 0))).shape
        torch.Size([5])
    """

    Params = EulerNetParams

    def __init__(self, spec: FeatureSpec, params: EulerNetParams | None = None) -> None:
        super().__init__(spec, params)
        p = self.params
        d, m = spec.embed_dim, spec.num_fields
        width = p.orders_per_layer or m
        shapes = [m] + [width] * p.num_layers
        self.mu = nn.Parameter(torch.ones(m, 1))  # per-field modulus
        self.layers = nn.ModuleList(
            EulerInteraction(a, b, d, p.ex_dropout, p.im_dropout, p.layer_norm) for a, b in zip(shapes[:-1], shapes[1:])
        )
        self.readout = nn.Linear(shapes[-1] * d, 1)
        nn.init.xavier_normal_(self.readout.weight)
        self.dense = nn.Linear(spec.num_dense, 1, bias=False) if spec.num_dense else None

    def forward(self, x: ModelInput) -> torch.Tensor:
        emb = x.stacked()  # (B, m, d), read as phases
        r, p = self.mu * torch.cos(emb), self.mu * torch.sin(emb)
        for layer in self.layers:
            r, p = layer(r, p)  # (B, m_out, d)
        b = r.shape[0]
        out = (self.readout(r.reshape(b, -1)) + self.readout(p.reshape(b, -1))).squeeze(-1)
        if self.dense is not None:
            out = out + self.dense(x.dense).squeeze(-1)
        return out
