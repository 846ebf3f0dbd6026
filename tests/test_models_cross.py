"""Feature-interaction models: shapes, gradient flow, hand-computed layers, a tiny fit.

Golden numbers in the layer tests are worked out by hand in the comments next to them; the
rest compare a vectorised layer against explicit Python loops over fields, pairs and experts.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from psrec.config_io import ConfigError
from psrec.models import FeatureSpec, ModelInput, build_model, model_names
from psrec.models.interactions import (
    CIN,
    Bilinear,
    CrossNet,
    CrossNetMix,
    CrossNetV2,
    CrossTowers,
    GatedCrossNet,
    SENet,
    pairwise_inner,
)
from psrec.models.opnn import sum_pooled_outer

F, D, NUM_DENSE = 6, 3, 2  # F = 6 so that SENET's bottleneck (F // 3 = 2 units) is not a single ReLU
SPEC = FeatureSpec(F, (D,) * F, NUM_DENSE)
SMALL = {"hidden": (8, 4)}

CASES = [
    ("ipnn", SMALL),
    ("opnn", SMALL),
    ("opnn", {**SMALL, "product": "kernel"}),
    ("dcn", SMALL),
    ("dcn_v2", {**SMALL, "structure": "crossnet_only"}),
    ("dcn_v2", {**SMALL, "structure": "stacked"}),
    ("dcn_v2", {**SMALL, "structure": "parallel"}),
    ("dcn_v2", {**SMALL, "structure": "stacked_parallel"}),
    ("dcn_mix", {**SMALL, "low_rank": 4, "num_experts": 3}),
    ("dcn_mix", {**SMALL, "low_rank": 4, "num_experts": 1, "activation": "relu", "structure": "stacked"}),
    ("dcn_mix", {**SMALL, "low_rank": 4, "num_experts": 2, "activation": "none"}),
    ("xdeepfm", {**SMALL, "cin_layers": (4, 3)}),
    ("fibinet", {**SMALL, "bilinear_type": "field_all"}),
    ("fibinet", {**SMALL, "bilinear_type": "field_each"}),
    ("fibinet", {**SMALL, "bilinear_type": "field_interaction"}),
    ("gdcn", {**SMALL, "structure": "stacked"}),
    ("gdcn", {**SMALL, "structure": "parallel"}),
]
IDS = [f"{n}-{'-'.join(str(v) for k, v in p.items() if k != 'hidden') or 'default'}" for n, p in CASES]


def _build(name: str, params: dict, seed: int = 0):
    # fork_rng: seed the model's init without touching the global RNG other tests see.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(name, SPEC, params)


def _input(batch: int, seed: int = 1, uses_linear: bool = True) -> ModelInput:
    g = torch.Generator().manual_seed(seed)
    fields = [torch.randn(batch, D, generator=g, requires_grad=True) for _ in range(F)]
    dense = torch.randn(batch, NUM_DENSE, generator=g)
    linear = torch.randn(batch, F, generator=g, requires_grad=True) if uses_linear else None
    return ModelInput(fields, dense, linear)


def test_all_registered():
    assert {"ipnn", "opnn", "dcn", "dcn_v2", "dcn_mix", "xdeepfm", "fibinet", "gdcn"} <= set(model_names())


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_shape_and_gradients(name, params):
    model = _build(name, params)
    for batch in (1, 7):
        x = _input(batch, uses_linear=model.uses_linear)
        out = model(x)
        assert out.shape == (batch,)
        assert torch.isfinite(out).all()

    x = _input(7, uses_linear=model.uses_linear)
    model.zero_grad()
    model(x).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert p.grad.abs().sum() > 0, f"{pname} got an all-zero gradient"
    for f, e in enumerate(x.fields):
        assert e.grad is not None and e.grad.abs().sum() > 0, f"field {f} embedding got no gradient"
    if model.uses_linear:
        assert x.linear.grad is not None and x.linear.grad.abs().sum() > 0


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_tiny_training_run_lowers_loss(name, params):
    model = _build(name, params, seed=2)
    g = torch.Generator().manual_seed(3)
    batch, vocab = 32, 4
    ids = torch.randint(0, vocab, (batch, F), generator=g)
    labels = ((ids[:, 0] + ids[:, 1]) % 2).float()  # a pure field-0 x field-1 interaction
    tables = nn.Parameter(0.1 * torch.randn(F, vocab, D, generator=g))  # trainable embeddings
    weights = nn.Parameter(torch.zeros(F, vocab))  # first-order weights
    dense = torch.randn(batch, NUM_DENSE, generator=g)
    opt = torch.optim.Adam([*model.parameters(), tables, weights], lr=0.02)
    rows = torch.arange(F)
    losses = []
    for _ in range(60):
        emb = tables[rows, ids]  # (B, F, D)
        x = ModelInput(list(emb.unbind(1)), dense, weights[rows, ids] if model.uses_linear else None)
        loss = nn.functional.binary_cross_entropy_with_logits(model(x), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses[::10]


# ---- hand-computed layers -------------------------------------------------------------------

def test_ipnn_inner_products_against_loops():
    emb = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(0))
    expected = torch.tensor([[sum(emb[b, i, k] * emb[b, j, k] for k in range(3))
                              for i in range(4) for j in range(i + 1, 4)] for b in range(2)])
    torch.testing.assert_close(pairwise_inner(emb), expected)

    model = _build("ipnn", SMALL)
    x = _input(3)
    e = [f.detach() for f in x.fields]
    prods = torch.tensor([[float(e[i][b] @ e[j][b]) for i in range(F) for j in range(i + 1, F)]
                          for b in range(3)])
    mlp_in = torch.cat([x.flat(), prods, x.dense], dim=1)
    torch.testing.assert_close(model(x), model.mlp(mlp_in).squeeze(-1))


def test_opnn_sum_pooled_outer_against_loop():
    emb = torch.randn(2, 3, 2, generator=torch.Generator().manual_seed(0))
    # The paper's p = sum_i sum_j e_i e_j^T, summed pair by pair.
    expected = torch.zeros(2, 2, 2)
    for i in range(3):
        for j in range(3):
            expected += emb[:, i, :, None] * emb[:, j, None, :]
    torch.testing.assert_close(sum_pooled_outer(emb), expected.reshape(2, 4))
    # Hand case: e = (1, 2), (3, -1) -> z = (4, 1) -> z z^T = [[16, 4], [4, 1]].
    hand = sum_pooled_outer(torch.tensor([[[1.0, 2.0], [3.0, -1.0]]]))
    torch.testing.assert_close(hand, torch.tensor([[16.0, 4.0, 4.0, 1.0]]))


def test_opnn_kernel_products_against_loop():
    model = _build("opnn", {**SMALL, "product": "kernel"})
    emb = _input(2).stacked()
    got = model.products(emb)
    pairs = [(i, j) for i in range(F) for j in range(i + 1, F)]
    for b in range(2):
        for p, (i, j) in enumerate(pairs):
            want = sum(emb[b, i, a] * model.kernel[p, a, c] * emb[b, j, c]
                       for a in range(D) for c in range(D))
            torch.testing.assert_close(got[b, p], want)


def test_dcn_cross_layer_hand_computed():
    net = CrossNet(2, 1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[0.5, -1.0]]))
        net.bias.copy_(torch.tensor([[0.1, 0.2]]))
    # x0 . w = 0.5 - 2 = -1.5; x1 = x0 * -1.5 + b + x0 = (-1.5 + 0.1 + 1, -3 + 0.2 + 2)
    out = net(torch.tensor([[1.0, 2.0]]))
    torch.testing.assert_close(out, torch.tensor([[-0.4, -0.8]]))


def test_dcn_v2_cross_layer_hand_computed():
    net = CrossNetV2(2, 1)
    with torch.no_grad():
        net.layers[0].weight.copy_(torch.tensor([[1.0, 0.0], [2.0, -1.0]]))
        net.layers[0].bias.copy_(torch.tensor([0.5, 1.0]))
    # W x0 + b = (1 + 0.5, 2 - 2 + 1) = (1.5, 1); x1 = x0 * (1.5, 1) + x0 = (2.5, 4)
    torch.testing.assert_close(net(torch.tensor([[1.0, 2.0]])), torch.tensor([[2.5, 4.0]]))


def _fill_mix(net: CrossNetMix, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def test_dcn_mix_single_expert_layer_matches_formula():
    n, r = 4, 2
    net = CrossNetMix(n, 1, low_rank=r, num_experts=1, activation="tanh")
    assert net.gate is None  # constant gate: nothing to learn
    _fill_mix(net, 0)
    x0 = torch.randn(3, n, generator=torch.Generator().manual_seed(1))
    U, V, C, b = net.U[0, 0], net.V[0, 0], net.C[0, 0], net.bias[0]
    for row in range(3):
        x = x0[row]
        want = x * (U @ torch.tanh(C @ torch.tanh(V.T @ x)) + b) + x
        torch.testing.assert_close(net(x0)[row], want)


def test_dcn_mix_gate_mixes_experts_by_softmax():
    n, r, k = 4, 2, 3
    net = CrossNetMix(n, 1, low_rank=r, num_experts=k, activation="relu")
    _fill_mix(net, 2)
    x0 = torch.randn(2, n, generator=torch.Generator().manual_seed(3))
    for row in range(2):
        x = x0[row]
        scores = torch.exp(torch.stack([net.gate.weight[i] @ x for i in range(k)]))  # softmax by hand
        want = x.clone()
        for i in range(k):
            U, V, C = net.U[0, i], net.V[0, i], net.C[0, i]
            expert = x * (U @ torch.relu(C @ torch.relu(V.T @ x)) + net.bias[0])
            want = want + scores[i] / scores.sum() * expert
        torch.testing.assert_close(net(x0)[row], want)


def test_dcn_mix_without_nonlinearity_is_dcn_v2_with_w_equal_ucvt():
    n, r = 5, 3
    mix = CrossNetMix(n, 2, low_rank=r, num_experts=1, activation="none")
    _fill_mix(mix, 4)
    full = CrossNetV2(n, 2)
    with torch.no_grad():
        for layer, U, V, C, b in zip(full.layers, mix.U[:, 0], mix.V[:, 0], mix.C[:, 0], mix.bias):
            layer.weight.copy_(U @ C @ V.T)
            layer.bias.copy_(b)
    x0 = torch.randn(4, n, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(mix(x0), full(x0))


def test_gdcn_gated_cross_layer_hand_computed():
    net = GatedCrossNet(2, 1)
    with torch.no_grad():
        net.cross[0].weight.copy_(torch.eye(2))
        net.cross[0].bias.copy_(torch.tensor([0.0, 0.5]))
        net.gate[0].weight.zero_()
    # W_c x0 + b = (1, 2.5); sigmoid(0) = 0.5; x1 = x0 * (1, 2.5) * 0.5 + x0 = (1.5, 4.5)
    torch.testing.assert_close(net(torch.tensor([[1.0, 2.0]])), torch.tensor([[1.5, 4.5]]))
    with torch.no_grad():
        net.gate[0].weight.copy_(torch.tensor([[1.0, -1.0], [0.0, 2.0]]))
    x0 = torch.tensor([[1.0, 2.0]])
    want = x0 * torch.tensor([[1.0, 2.5]]) * torch.sigmoid(torch.tensor([[-1.0, 4.0]])) + x0
    torch.testing.assert_close(net(x0), want)


def test_cross_towers_structures_compose_as_documented():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 5, generator=g)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        only = CrossTowers(CrossNetV2(5, 1), 5, "crossnet_only", (4,), 0.0, False)
        both = CrossTowers(CrossNetV2(5, 1), 5, "stacked_parallel", (4,), 0.0, False)
    torch.testing.assert_close(only(x0), only.fc(only.cross(x0)).squeeze(-1))
    want = both.fc(torch.cat([both.stacked(both.cross(x0)), both.parallel(x0)], dim=1)).squeeze(-1)
    torch.testing.assert_close(both(x0), want)


def test_cin_layers_against_loops():
    b_, m, d, layers = 2, 3, 4, (2, 3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        cin = CIN(m, layers)
    x0 = torch.randn(b_, m, d, generator=torch.Generator().manual_seed(1))
    prev = x0
    pooled = []
    for w, bias in zip(cin.weights, cin.biases):
        nxt = torch.zeros(b_, w.shape[0], d)
        for h in range(w.shape[0]):
            for i in range(prev.shape[1]):
                for j in range(m):
                    nxt[:, h] += w[h, i, j] * prev[:, i] * x0[:, j]  # X^{k-1}_i * X^0_j
            nxt[:, h] += bias[h]
        pooled.append(nxt.sum(dim=-1))
        prev = nxt
    torch.testing.assert_close(cin(x0), torch.cat(pooled, dim=1))


def test_senet_weights_hand_computed():
    se = SENet(3, 3)  # bottleneck of max(1, 3 // 3) = 1 unit
    with torch.no_grad():
        se.squeeze_to.weight.copy_(torch.tensor([[1.0, 0.5, 1.0]]))
        se.excite.weight.copy_(torch.tensor([[1.0], [-1.0], [0.5]]))
    emb = torch.tensor([[[1.0, 3.0], [2.0, 2.0], [0.0, -2.0]]])
    # z = (2, 2, -1); W1 z = 2 + 1 - 1 = 2; a = ReLU((2, -2, 1)) = (2, 0, 1)
    torch.testing.assert_close(se.field_weights(emb), torch.tensor([[2.0, 0.0, 1.0]]))
    torch.testing.assert_close(se(emb), torch.tensor([[[2.0, 6.0], [0.0, 0.0], [0.0, -2.0]]]))


@pytest.mark.parametrize("kind", ["field_all", "field_each", "field_interaction"])
def test_bilinear_against_loops(kind):
    m, d = 4, 3
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        bl = Bilinear(m, d, kind)
    assert bl.weight.shape[0] == {"field_all": 1, "field_each": m - 1, "field_interaction": 6}[kind]
    emb = torch.randn(2, m, d, generator=torch.Generator().manual_seed(1))
    got = bl(emb)
    pairs = [(i, j) for i in range(m) for j in range(i + 1, m)]
    for p, (i, j) in enumerate(pairs):
        w = bl.weight[{"field_all": 0, "field_each": i, "field_interaction": p}[kind]]
        torch.testing.assert_close(got[:, p], (emb[:, i] @ w) * emb[:, j])


def test_bilinear_field_all_hand_computed():
    bl = Bilinear(2, 2, "field_all")
    with torch.no_grad():
        bl.weight.copy_(torch.tensor([[[1.0, 2.0], [0.0, 1.0]]]))
    # e_1 W = (1, 3) W = (1, 2 + 3) = (1, 5); * e_2 = (1, 5) * (2, -1) = (2, -5)
    out = bl(torch.tensor([[[1.0, 3.0], [2.0, -1.0]]]))
    torch.testing.assert_close(out, torch.tensor([[[2.0, -5.0]]]))


def test_bad_params_name_the_problem():
    with pytest.raises(ConfigError, match="structure"):
        build_model("dcn_v2", SPEC, {"structure": "diagonal"})
    with pytest.raises(ConfigError, match="activation"):
        build_model("dcn_mix", SPEC, {"activation": "gelu"})
    with pytest.raises(ConfigError, match="bilinear_type"):
        build_model("fibinet", SPEC, {"bilinear_type": "pairs"})
    with pytest.raises(ConfigError, match="cin_layers"):
        build_model("xdeepfm", SPEC, {"cin_layers": []})
    with pytest.raises(ValueError, match="one embedding width"):
        build_model("ipnn", FeatureSpec(2, (3, 4)))
