"""Feature-interaction models: xDeepInt, DynInt, CAN, EulerNet, RFM.

Each model: output shape, gradients to every parameter and to the inputs, a hand-computed
known answer on a tiny input, and a short training run whose loss falls.
"""
from __future__ import annotations

import cmath
import math

import pytest
import torch
import torch.nn.functional as fn

from psrec.models import FeatureSpec, ModelInput, build_model
from psrec.models.can import CAN, CANParams
from psrec.models.dynint import DynInt, DynIntParams
from psrec.models.eulernet import IMPLICIT_INIT_STD, EulerInteraction
from psrec.models.pin import subspace_merge, subspace_split
from psrec.models.rfm import RFM, RFMParams, rotation_scores
from psrec.models.xdeepint import XDeepInt, XDeepIntParams

F, D, ND = 3, 4, 2
SPEC = FeatureSpec(F, (D,) * F, ND)

# Tiny configurations covering every mode and independence option.
CONFIGS = {
    "xdeepint": ("xdeepint", dict(num_layers=2, num_subspaces=2)),
    **{f"dynint-{m}": ("dynint", dict(mode=m, num_layers=2, num_subspaces=2, gate_hidden=8, rank=3))
       for m in ("da", "dp", "dgp", "dwp")},
    "can": ("can", dict(feed_fields=(0, 2), induction_fields=(1, 1), coaction_hidden=(4, 2), orders=2, hidden=(8,))),
    "can-pairs-orders": ("can", dict(feed_fields=(0, 2), induction_fields=(1, 1), coaction_hidden=(4, 2), orders=2,
                                     hidden=(8,), separate_pairs=True, separate_orders=True, coaction_bias=True)),
    "can-tables": ("can", dict(feed_fields=(0, 1), induction_fields=(1, 2), coaction_hidden=(3,), orders=3,
                               hidden=(8,), separate_tables=True)),
    "eulernet": ("eulernet", dict(num_layers=2, orders_per_layer=2)),
    "rfm": ("rfm", dict(num_layers=2, hidden=8, num_heads=2, amp_hidden=(16,), amp_group=8)),
}


def _build(key: str, seed: int = 0):
    torch.manual_seed(seed)
    name, params = CONFIGS[key]
    return build_model(name, SPEC, params)


def _input(model, batch: int, seed: int = 1, scale: float = 0.5) -> ModelInput:
    g = torch.Generator().manual_seed(seed)
    fields = [(torch.randn(batch, d, generator=g) * scale).requires_grad_() for d in model.spec.embed_dims]
    extra = {t.name: [(torch.randn(batch, t.dim, generator=g) * scale).requires_grad_() for _ in t.fields]
             for t in model.extra_embeddings()}
    return ModelInput(fields, torch.randn(batch, ND, generator=g), extra=extra)


@pytest.mark.parametrize("key", CONFIGS)
@pytest.mark.parametrize("batch", [1, 7])
def test_output_shape(key, batch):
    model = _build(key)
    assert model(_input(model, batch)).shape == (batch,)


@pytest.mark.parametrize("key", CONFIGS)
def test_gradients_reach_every_parameter_and_input(key):
    model = _build(key)
    x = _input(model, 7)
    labels = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    fn.binary_cross_entropy_with_logits(model(x), labels).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient for {name}"
    for i, e in enumerate(x.fields):
        assert e.grad is not None and e.grad.abs().sum() > 0, f"no gradient for field {i}"
    for name, rows in x.extra.items():
        for e in rows:
            assert e.grad is not None and e.grad.abs().sum() > 0, f"no gradient for extra {name}"


@pytest.mark.parametrize("name", ["xdeepint", "dynint", "can", "eulernet", "rfm"])
def test_defaults_build_from_config_mapping(name):
    spec = FeatureSpec(3, (8, 8, 8), 1)
    model = build_model(name, spec, {})
    x = ModelInput([torch.randn(2, 8)] * 3, torch.randn(2, 1),
                   extra={t.name: [torch.randn(2, t.dim) for _ in t.fields] for t in model.extra_embeddings()})
    assert model(x).shape == (2,)


# ---------------------------------------------------------------- xDeepInt / PIN


def test_subspace_split_merge_roundtrip():
    e = torch.randn(2, 3, 6)
    assert torch.equal(subspace_merge(subspace_split(e, 3), 3), e)


def _pin_explicit(emb, weight, h):
    """One PIN layer with sub-space splitting, written out with loops (emb: one sample, m x d)."""
    m, d = len(emb), len(emb[0])
    k = d // h
    x0 = [[emb[i % m][(i // m) * k + c] for c in range(k)] for i in range(m * h)]  # row s*m+f
    return [[x0[i][c] * sum(weight[i][j] * x0[j][c] for j in range(m * h)) + x0[i][c] for c in range(k)]
            for i in range(m * h)]


def test_xdeepint_one_layer_known_answer():
    torch.manual_seed(3)
    model = XDeepInt(FeatureSpec(2, (4, 4), 1), XDeepIntParams(num_layers=1, num_subspaces=2)).double()
    emb = torch.randn(2, 2, 4, dtype=torch.float64)
    dense = torch.randn(2, 1, dtype=torch.float64)
    out = model(ModelInput(list(emb.unbind(1)), dense))
    w = model.layers[0].weight.tolist()
    fw, bias, wd = model.out.field_weight.tolist(), model.out.bias.item(), model.out.dense.weight.item()
    for b in range(2):
        x1 = _pin_explicit(emb[b].tolist(), w, h=2)
        # row s*m + f holds field f's sub-space s; the read-out weights fields, whatever the sub-space
        want = sum(fw[i % 2] * v for i, row in enumerate(x1) for v in row) + bias + wd * dense[b, 0].item()
        assert out[b].item() == pytest.approx(want, rel=1e-9)


# ---------------------------------------------------------------- DynInt


def _dyn_model(mode: str) -> DynInt:
    torch.manual_seed(4)
    return DynInt(FeatureSpec(2, (4, 4), 1), DynIntParams(mode=mode, num_layers=1, num_subspaces=2,
                                                          gate_hidden=5, rank=3)).double()


def test_dynint_da_layer_with_fixed_gate_known_answer():
    model = _dyn_model("da")
    layer = model.layers[0]
    emb = torch.randn(2, 2, 4, dtype=torch.float64)
    gate = torch.tensor([[0.5, 1.5, 0.2, 1.9], [1.0, 0.1, 0.7, 1.3]], dtype=torch.float64)  # (B, n = m*h)
    x0 = subspace_split(emb, 2)
    got = layer(x0, x0, gate)
    w = layer.weight.tolist()
    for b in range(2):
        plain = _pin_explicit(emb[b].tolist(), [[0.0] * 4] * 4, h=2)  # W = 0: just X_0
        mixed = _pin_explicit(emb[b].tolist(), w, h=2)
        for i in range(4):
            for c in range(2):
                interaction = mixed[i][c] - plain[i][c]  # X_0 * (W X_0)
                want = interaction * gate[b, i].item() + plain[i][c]
                assert got[b, i, c].item() == pytest.approx(want, rel=1e-9)
    # the model routes each layer's own gate output into that layer
    x = ModelInput(list(emb.unbind(1)), torch.randn(2, 1, dtype=torch.float64))
    dyn = model.dynamics(x)[0]
    assert torch.all((dyn > 0) & (dyn < 2))
    want = model.out(subspace_merge(layer(x0, x0, dyn), 2), x.dense)
    torch.testing.assert_close(model(x), want)


@pytest.mark.parametrize("mode", ["dp", "dgp", "dwp"])
def test_dynint_parameter_modes_match_explicit_weight(mode):
    model = _dyn_model(mode)
    layer = model.layers[0]
    n, r, bsz = 4, 3, 2
    x0 = subspace_split(torch.randn(bsz, 2, 4, dtype=torch.float64), 2)
    dyn = layer.dynamic(torch.randn(bsz, 9, dtype=torch.float64))
    if mode == "dp":
        w = dyn.view(bsz, n, n) * layer.weight
    elif mode == "dgp":
        w = torch.stack([layer.u @ torch.diag(g) @ layer.v.T for g in dyn])
    else:
        u, v = dyn.view(bsz, 2, n, r).unbind(1)
        w = u @ v.transpose(1, 2)
    want = x0 * (w @ x0) + x0
    torch.testing.assert_close(layer(x0, x0, dyn), want)


@pytest.mark.parametrize("mode", ["da", "dp", "dgp", "dwp"])
def test_dynint_gate_input_gets_no_gradient_through_the_gate(mode):
    model = _build(f"dynint-{mode}")
    x = _input(model, 5)
    gates = model.dynamics(x)
    assert all(g.requires_grad for g in gates)  # the gate weights are trained ...
    grads = torch.autograd.grad(sum(g.sum() for g in gates), x.fields, allow_unused=True)
    assert all(g is None for g in grads)  # ... but nothing flows back into the embeddings


# ---------------------------------------------------------------- CAN


def test_can_extra_embedding_widths_follow_independence_options():
    spec = FeatureSpec(3, (16, 16, 16))
    pairs = dict(feed_fields=(0, 2), induction_fields=(1, 1))

    def tables(**kw):
        return [(t.name, t.fields, t.dim) for t in CAN(spec, CANParams(**pairs, **kw)).extra_embeddings()]

    assert tables() == [("can_coaction_f1", (1,), 16 * 8 + 8 * 4)]  # the reference's 160
    assert tables(separate_orders=True) == [("can_coaction_f1", (1,), 3 * 160)]
    assert tables(separate_pairs=True) == [("can_coaction_f1", (1,), 2 * 160)]
    assert tables(separate_tables=True) == [("can_coaction_p0", (1,), 160), ("can_coaction_p1", (1,), 160)]
    assert tables(coaction_bias=True) == [("can_coaction_f1", (1,), 160 + 8 + 4)]
    # feed fields of different widths cannot share one weight set, but can have a block each
    narrow = FeatureSpec(3, (16, 16, 4))
    with pytest.raises(ValueError):
        CAN(narrow, CANParams(**pairs))
    can = CAN(narrow, CANParams(**pairs, separate_pairs=True))
    assert [t.dim for t in can.extra_embeddings()] == [160 + 4 * 8 + 8 * 4]


def _mlp_by_hand(f, w1, w2):
    h1 = [math.tanh(sum(f[a] * w1[a][c] for a in range(len(f)))) for c in range(len(w1[0]))]
    h2 = [sum(h1[a] * w2[a][c] for a in range(len(h1))) for c in range(len(w2[0]))]
    return h1 + h2


@pytest.mark.parametrize("separate_orders", [False, True])
def test_can_coaction_known_answer(separate_orders):
    spec = FeatureSpec(2, (2, 3))
    model = CAN(spec, CANParams(feed_fields=(0,), induction_fields=(1,), coaction_hidden=(2, 1), orders=2,
                                separate_orders=separate_orders, hidden=(4,)))
    f = [0.7, -1.3]
    sets = [([[0.5, -0.2], [0.3, 0.8]], [[1.5], [-0.4]]), ([[-0.6, 0.1], [0.9, 0.2]], [[0.3], [2.0]])]
    flat = []
    for w1, w2 in sets[:2 if separate_orders else 1]:
        flat += [v for row in w1 for v in row] + [v for row in w2 for v in row]  # W1 row-major, then W2
    assert model.extra_embeddings()[0].dim == len(flat)
    x = ModelInput([torch.tensor([f]), torch.zeros(1, 3)], torch.zeros(1, 0),
                   extra={"can_coaction_f1": [torch.tensor([flat])]})
    w_order2 = sets[1] if separate_orders else sets[0]
    want = _mlp_by_hand(f, *sets[0]) + _mlp_by_hand([v * v for v in f], *w_order2)  # orders 1 and 2
    torch.testing.assert_close(model.coaction_features(x), torch.tensor([want]))


def test_can_separate_pairs_uses_each_pairs_own_block():
    spec = FeatureSpec(3, (2, 2, 2))
    model = CAN(spec, CANParams(feed_fields=(0, 2), induction_fields=(1, 1), coaction_hidden=(1,), orders=1,
                                separate_pairs=True, hidden=(4,)))
    x = ModelInput([torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2), torch.tensor([[3.0, -1.0]])], torch.zeros(1, 0),
                   extra={"can_coaction_f1": [torch.tensor([[1.0, 1.0, 2.0, 5.0]])]})
    # pair 0: [1, 2] @ [1, 1]^T = 3; pair 1: [3, -1] @ [2, 5]^T = 1 (a single linear layer, no tanh)
    torch.testing.assert_close(model.coaction_features(x), torch.tensor([[3.0, 1.0]]))


@pytest.mark.parametrize("kw", [dict(feed_fields=(1,), induction_fields=(1,)),
                                dict(feed_fields=(0, 0), induction_fields=(1, 1)),
                                dict(separate_tables=True, separate_pairs=True)])
def test_can_rejects_bad_params(kw):
    with pytest.raises(ValueError):
        CANParams(**kw)


# ---------------------------------------------------------------- EulerNet


def test_eulernet_explicit_part_equals_complex_power_product():
    torch.manual_seed(5)
    layer = EulerInteraction(m_in=2, m_out=3, dim=2, layer_norm=False).double()
    with torch.no_grad():
        layer.orders.copy_(torch.tensor([[1.0, 2.0, -0.5], [0.5, 1.0, 1.7]]))  # any real orders
    r, p = torch.randn(2, 2, 2, dtype=torch.float64), torch.randn(2, 2, 2, dtype=torch.float64)
    ex_r, ex_p = layer.explicit(r, p)
    a, bl, bt = layer.orders.tolist(), layer.bias_lam.tolist(), layer.bias_theta.tolist()
    for b in range(2):
        for j in range(3):
            for c in range(2):
                logs = sum(a[f][j] * cmath.log(complex(r[b, f, c].item(), p[b, f, c].item())) for f in range(2))
                z = cmath.exp(logs + bl[j][c] + 1j * bt[j][c])  # prod_f z_f^{A_fj} * e^{b}
                assert ex_r[b, j, c].item() == pytest.approx(z.real, rel=1e-6, abs=1e-9)
                assert ex_p[b, j, c].item() == pytest.approx(z.imag, rel=1e-6, abs=1e-9)


def test_eulernet_layer_adds_implicit_part():
    torch.manual_seed(6)
    layer = EulerInteraction(m_in=2, m_out=2, dim=3, layer_norm=False).double()
    r, p = torch.randn(4, 2, 3, dtype=torch.float64), torch.randn(4, 2, 3, dtype=torch.float64)
    ex_r, ex_p = layer.explicit(r, p)
    out_r, out_p = layer(r, p)
    torch.testing.assert_close(out_r, ex_r + torch.relu(layer.implicit(r.reshape(4, -1))).view(4, 2, 3))
    torch.testing.assert_close(out_p, ex_p + torch.relu(layer.implicit(p.reshape(4, -1))).view(4, 2, 3))


def test_eulernet_defaults_start_from_the_authors_implicit_init():
    torch.manual_seed(0)
    model = build_model("eulernet", FeatureSpec(26, (16,) * 26, 13), {})
    assert not model.params.layer_norm
    for layer in model.layers:
        w = layer.implicit.weight  # (416, 416): 173K draws
        assert abs(w.std().item() - IMPLICIT_INIT_STD) < 0.0005  # xavier_uniform would be 0.049
        assert isinstance(layer.norm_r, torch.nn.Identity) and isinstance(layer.norm_p, torch.nn.Identity)


@pytest.mark.parametrize("layer_norm", [False, True])
def test_eulernet_near_zero_row_contributes_near_nothing_without_layernorm(layer_norm):
    # A barely trained row sits near 0 (init N(0, 0.01^2)). Without LayerNorm its contribution
    # shrinks with its length, as in LR or a DNN; LayerNorm over d blows it up to unit scale.
    torch.manual_seed(4)
    model = build_model("eulernet", FeatureSpec(4, (8,) * 4, 0), {"layer_norm": layer_norm})
    g = torch.Generator().manual_seed(5)
    base = torch.randn(64, 4, 8, generator=g)
    noise = torch.randn(64, 8, generator=g)
    zero_dense = torch.zeros(64, 0)

    def logits(scale: float) -> torch.Tensor:
        emb = base.clone()
        emb[:, 3] = noise * scale  # field 3 holds a near-zero row
        return model(ModelInput.from_stacked(emb, zero_dense))

    with torch.no_grad():
        at_zero = logits(0.0)
        moved = (logits(0.01) - at_zero).abs().mean().item()
        spread = (logits(1.0) - at_zero).abs().mean().item()
    # measured: 0.011 without LayerNorm (linear in the length), 0.14 with it
    if layer_norm:
        assert moved > 0.1 * spread
    else:
        assert moved < 0.03 * spread


# ---------------------------------------------------------------- RFM


def test_rfm_score_for_one_pair():
    g = torch.Generator().manual_seed(7)
    q, k, w = torch.randn(1, 3, 4, generator=g), torch.randn(1, 3, 4, generator=g), torch.randn(4, generator=g)
    s = rotation_scores(q, k, w)
    i, j = 0, 2
    logit = sum(w[c].item() * math.cos(q[0, i, c].item() - k[0, j, c].item()) for c in range(4))
    assert s[0, i, j].item() == pytest.approx(1.0 / (1.0 + math.exp(-logit)), rel=1e-5)


def test_rfm_init_keeps_fields_apart():
    # The reference's std ~ 1/sqrt(m d_out) for Q, K, V. At init (angles near 0) every score is
    # the same, so the mixed term is one vector for all fields; the field's own theta_i P must
    # stay comparable to it or the fields' outputs collapse onto one direction.
    torch.manual_seed(0)
    m, d = 26, 16
    model = RFM(FeatureSpec(m, (d,) * m), RFMParams())
    layer = model.layers[0]
    want = 1.414 * math.sqrt(2.0 / (d * d + m * d))
    for w in (layer.q, layer.k, layer.v):
        assert abs(w.std().item() - want) < 0.004  # 6,656 draws; a per-field xavier std is 0.35
    theta = torch.randn(512, m, d, generator=torch.Generator().manual_seed(1)) * 0.01
    with torch.no_grad():
        v = torch.einsum("bfi,fio->bfo", theta, layer.v)
        q = torch.einsum("bfi,fio->bfo", theta, layer.q)
        k = torch.einsum("bfi,fio->bfo", theta, layer.k)
        mixed = rotation_scores(q, k, layer.w) @ v  # (B, m, d)
        ratio = (mixed.norm(dim=-1) / layer.proj(theta).norm(dim=-1)).mean().item()
        out = layer(theta)
        cos = fn.cosine_similarity(out[:, 0], out[:, 5], dim=-1).mean().item()
    assert 0.5 < ratio < 1.5  # 4.1 with the per-field xavier std
    assert cos < 0.6  # 0.93 with the per-field xavier std


def test_rfm_rotation_layer_known_answer():
    torch.manual_seed(8)
    model = RFM(FeatureSpec(2, (2, 2)), RFMParams(num_layers=1, hidden=2)).double()
    layer = model.layers[0]
    theta = torch.randn(1, 2, 2, dtype=torch.float64)
    q = [theta[0, f] @ layer.q[f] for f in range(2)]
    k = [theta[0, f] @ layer.k[f] for f in range(2)]
    v = [theta[0, f] @ layer.v[f] for f in range(2)]
    for i in range(2):
        mixed = sum(torch.sigmoid((layer.w * torch.cos(q[i] - k[j])).sum()) * v[j] for j in range(2))
        pre = mixed + theta[0, i] @ layer.proj.weight.T
        want = (pre - pre.mean()) / torch.sqrt(pre.var(unbiased=False) + 1e-5)  # LayerNorm at its init
        torch.testing.assert_close(layer(theta)[0, i], want)


def _layer_norm(x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the last axis at its init (weight 1, bias 0, eps 1e-5)."""
    return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)


def test_rfm_forward_with_first_order_residual_known_answer():
    torch.manual_seed(10)
    model = RFM(FeatureSpec(2, (2, 2), 1), RFMParams(num_layers=1, hidden=3)).double()
    assert model.params.first_order_residual  # the default (see RFMParams)
    assert torch.all(model.dense.weight == 0)  # starts neutral; give it a value to check its term
    with torch.no_grad():
        model.dense.weight.fill_(0.7)
    theta0 = torch.randn(2, 2, 2, dtype=torch.float64)
    dense = torch.randn(2, 1, dtype=torch.float64)
    out = model(ModelInput(list(theta0.unbind(1)), dense))
    theta1 = model.layers[0](theta0)  # (B, m, hidden); the layer has its own known answer above
    first = theta0 @ model.first.weight.T + model.first.bias  # theta_0 P_0 + b_0
    r = _layer_norm(torch.cos(theta1) + torch.cos(first)).reshape(2, -1)
    p = _layer_norm(torch.sin(theta1) + torch.sin(first)).reshape(2, -1)
    w, b = model.readout.weight[0], model.readout.bias[0]
    want = r @ w + b + p @ w + b + dense[:, 0] * model.dense.weight[0, 0]
    torch.testing.assert_close(out, want)


def test_rfm_readout_starts_small_and_xavier_is_the_reference_option():
    # A xavier read-out of unit-scale cos/sin starts as a random function of the keys (per-sample
    # logit std ~1-2); the default starts it near constant. readout_std=0 is the reference's init.
    m, d = 26, 16
    spec = FeatureSpec(m, (d,) * m)
    theta = torch.randn(256, m, d, generator=torch.Generator().manual_seed(2)) * 0.01  # fresh rows
    x = ModelInput.from_stacked(theta, torch.zeros(256, 0))
    torch.manual_seed(0)
    small = RFM(spec, RFMParams())
    torch.manual_seed(0)
    xavier = RFM(spec, RFMParams(readout_std=0.0))
    assert abs(small.readout.weight.std().item() - 0.001) < 1e-4  # 416 draws
    assert abs(xavier.readout.weight.std().item() - math.sqrt(2.0 / (m * d + 1))) < 0.008
    with torch.no_grad():
        assert small(x).std().item() < 0.1  # measured 0.03
        assert xavier(x).std().item() > 0.5  # measured ~2
    with pytest.raises(ValueError, match="readout_std"):
        RFMParams(readout_std=-1.0)


# ---------------------------------------------------------------- training


@pytest.mark.parametrize("key", CONFIGS)
def test_short_training_lowers_loss(key):
    model = _build(key)
    g = torch.Generator().manual_seed(9)
    vocab, batch = 6, 32
    keys = torch.randint(0, vocab, (batch, F), generator=g)
    labels = ((keys[:, 0] + keys[:, 1]) % 2).float()  # needs an interaction of fields 0 and 1
    dense = torch.randn(batch, ND, generator=g)
    tables = [torch.nn.Parameter(torch.randn(vocab, d, generator=g) * 0.5) for d in model.spec.embed_dims]
    extra = {t.name: [torch.nn.Parameter(torch.randn(vocab, t.dim, generator=g) * 0.5) for _ in t.fields]
             for t in model.extra_embeddings()}
    params = list(model.parameters()) + tables + [e for rows in extra.values() for e in rows]
    opt = torch.optim.Adam(params, lr=0.02)

    def loss_now():
        x = ModelInput([tables[f][keys[:, f]] for f in range(F)], dense,
                       extra={n: [e[keys[:, t.fields[i]]] for i, e in enumerate(extra[n])]
                              for t in model.extra_embeddings() for n in [t.name]})
        return fn.binary_cross_entropy_with_logits(model(x), labels)

    first = loss_now().item()
    for _ in range(60):
        opt.zero_grad()
        loss = loss_now()
        loss.backward()
        opt.step()
    assert loss_now().item() < 0.8 * first
