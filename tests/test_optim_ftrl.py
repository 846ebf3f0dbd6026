"""Dense FTRL-Proximal against a per-coordinate closed form written out by hand."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as fn

from psrec.models import FeatureSpec, ModelInput
from psrec.models.xdeepint import XDeepInt, XDeepIntParams
from psrec.optim import FTRL


def _ftrl_by_hand(w0, grads, alpha, beta, l1, l2, n0=0.0):
    """McMahan et al. 2013, Algorithm 1, one coordinate at a time, in Python floats."""
    w, z, n = list(w0), [0.0] * len(w0), [n0] * len(w0)
    for g in grads:
        for i, gi in enumerate(g):
            sigma = (math.sqrt(n[i] + gi * gi) - math.sqrt(n[i])) / alpha
            z[i] += gi - sigma * w[i]
            n[i] += gi * gi
            if abs(z[i]) <= l1:
                w[i] = 0.0
            else:
                w[i] = -(z[i] - math.copysign(l1, z[i])) / ((beta + math.sqrt(n[i])) / alpha + l2)
    return w


GRADS = [[0.5, -0.3, 0.02, 1.2], [0.4, 0.1, -0.01, -2.0], [-0.2, -0.6, 0.03, 0.7]]
W0 = [0.3, -0.1, 0.05, 0.0]


@pytest.mark.parametrize("alpha,beta,l1,l2,n0", [(0.02, 1.0, 0.1, 0.1, 0.0),  # xDeepInt's PIN settings
                                                 (0.5, 1.0, 0.0, 0.0, 0.0),
                                                 (0.1, 0.0, 0.05, 0.2, 0.1)])  # TF-like: no beta, n starts at 0.1
def test_matches_closed_form(alpha, beta, l1, l2, n0):
    w = torch.nn.Parameter(torch.tensor(W0, dtype=torch.float64))
    opt = FTRL([w], lr=alpha, beta=beta, l1=l1, l2=l2, initial_accumulator_value=n0)
    for k, g in enumerate(GRADS):
        w.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        want = _ftrl_by_hand(W0, GRADS[:k + 1], alpha, beta, l1, l2, n0)
        torch.testing.assert_close(w.detach(), torch.tensor(want, dtype=torch.float64))


def test_param_groups_use_their_own_settings():
    a = torch.nn.Parameter(torch.tensor(W0, dtype=torch.float64))
    b = torch.nn.Parameter(torch.tensor(W0, dtype=torch.float64))
    opt = FTRL([{"params": [a]}, {"params": [b], "lr": 0.5, "l1": 0.0, "l2": 0.0}], lr=0.02)
    for g in GRADS:
        a.grad = torch.tensor(g, dtype=torch.float64)
        b.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    want_a = _ftrl_by_hand(W0, GRADS, 0.02, 1.0, 0.1, 0.1)  # the constructor's defaults, but lr
    want_b = _ftrl_by_hand(W0, GRADS, 0.5, 1.0, 0.0, 0.0)
    torch.testing.assert_close(a.detach(), torch.tensor(want_a, dtype=torch.float64))
    torch.testing.assert_close(b.detach(), torch.tensor(want_b, dtype=torch.float64))


def test_large_l1_gives_exact_zeros():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.zeros(5, 6))  # FTRL's usual start; a random start enters z via -sigma * w
    opt = FTRL([w], lr=0.1, l1=10.0, l2=0.0)
    for _ in range(3):
        w.grad = torch.randn(5, 6)
        opt.step()
    assert torch.count_nonzero(w) == 0


def test_l1_zeroes_exactly_the_coordinates_with_small_z():
    w = torch.nn.Parameter(torch.zeros(4))
    opt = FTRL([w], lr=0.1, l1=0.5, l2=0.0)
    w.grad = torch.tensor([0.1, -0.4, 0.9, -3.0])
    opt.step()
    # from w = 0, z = g: |z| <= l1 -> exactly 0, else shrunk towards 0 by l1
    assert w[0].item() == 0.0 and w[1].item() == 0.0
    assert w[2].item() == pytest.approx(-0.1 * (0.9 - 0.5) / (1.0 + 0.9))
    assert w[3].item() == pytest.approx(-0.1 * (-3.0 + 0.5) / (1.0 + 3.0))


def test_closure_and_missing_grads():
    w = torch.nn.Parameter(torch.tensor([1.0]))
    unused = torch.nn.Parameter(torch.tensor([2.0]))
    opt = FTRL([w, unused], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (w ** 2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == pytest.approx(1.0)
    assert unused.item() == 2.0  # no gradient, no update


def test_rejects_sparse_gradients_and_bad_settings():
    w = torch.nn.Parameter(torch.zeros(3, 2))
    opt = FTRL([w])
    w.grad = torch.sparse_coo_tensor([[0]], torch.ones(1, 2), (3, 2), check_invariants=True)
    with pytest.raises(RuntimeError):
        opt.step()
    for kw in (dict(lr=0.0), dict(l1=-1.0), dict(beta=0.0, l2=0.0)):
        with pytest.raises(ValueError):
            FTRL([w], **kw)


def test_trains_xdeepint_pin_weights():
    """The xDeepInt recipe: FTRL (lr 0.02, l1 0.1, l2 0.1) on the PIN, another optimizer on the rest."""
    torch.manual_seed(0)
    model = XDeepInt(FeatureSpec(3, (4, 4, 4)), XDeepIntParams(num_layers=2, num_subspaces=2))
    g = torch.Generator().manual_seed(1)
    keys = torch.randint(0, 6, (32, 3), generator=g)
    labels = ((keys[:, 0] + keys[:, 1]) % 2).float()
    tables = [torch.nn.Parameter(torch.randn(6, 4, generator=g) * 0.5) for _ in range(3)]
    pin = FTRL(model.layers.parameters(), lr=0.02, l1=0.1, l2=0.1)
    rest = torch.optim.Adam(list(model.out.parameters()) + tables, lr=0.02)

    def loss_now():
        x = ModelInput([tables[f][keys[:, f]] for f in range(3)], torch.zeros(32, 0))
        return fn.binary_cross_entropy_with_logits(model(x), labels)

    first = loss_now().item()
    for _ in range(60):
        pin.zero_grad()
        rest.zero_grad()
        loss_now().backward()
        pin.step()
        rest.step()
    assert loss_now().item() < 0.8 * first
    assert torch.count_nonzero(model.layers[0].weight) < model.layers[0].weight.numel()  # L1 made zeros
