"""Feature-refinement modules and FRNet: shapes, gradient flow, hand-computed answers, learning."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from psrec.config_io import ConfigError
from psrec.models import CTRModel, ExtraEmbedding, FeatureSpec, ModelInput, build_model
from psrec.models.refine import (
    FEN,
    FWN,
    GFRL,
    IEU,
    SENET,
    BGate,
    ContextMLPParams,
    FRNetV,
    IEUParams,
    SENETParams,
    VGate,
    build_refiner,
    cs_gate,
    refine_model,
    refiner_names,
    with_fields,
)
from psrec.models.refine.gfrl import FLU

F, D, NUM_DENSE = 4, 4, 2
SPEC = FeatureSpec(F, (D,) * F, NUM_DENSE)
REFINERS = ["bgate", "fen", "frnet_b", "frnet_v", "fwn", "gfrl", "senet", "skip", "vgate"]
# Small widths keep the whole file fast on a busy 2-core machine.
_SMALL_IEU = {"att_size": 4, "cie_hidden": (8,)}
SMALL_REFINE = {"fen": {"hidden": (8,)}, "gfrl": {"hidden": (8,)}, "frnet_b": _SMALL_IEU, "frnet_v": _SMALL_IEU}
SMALL_FRNET = {"att_size": 4, "cie_hidden": (8,), "hidden": (16,)}
CASES = ([("frnet", "bit"), ("frnet", "vector"), ("frnet", "dnn")]
         + [(backbone, r) for backbone in ("deepfm", "dnn") for r in REFINERS])


@pytest.fixture(autouse=True)
def _one_thread():
    # The tensors here are tiny: thread hand-offs cost more than they save on a shared machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _build(case: tuple[str, str]) -> CTRModel:
    head, variant = case
    if head == "frnet":
        extra = {"backbone": "dnn"} if variant == "dnn" else {"weight_type": variant}
        return build_model("frnet", SPEC, {**SMALL_FRNET, **extra})
    return refine_model(build_model(head, SPEC, {"hidden": (16,)}), variant, SMALL_REFINE.get(variant))


def _inputs(model: CTRModel, batch: int, requires_grad: bool = False) -> ModelInput:
    fields = [torch.randn(batch, D, requires_grad=requires_grad) for _ in range(F)]
    linear = torch.randn(batch, F, requires_grad=requires_grad) if model.uses_linear else None
    return ModelInput(fields, torch.randn(batch, NUM_DENSE), linear)


def _t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def test_registered_names():
    assert refiner_names() == REFINERS


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(c))
@pytest.mark.parametrize("batch", [1, 7])
def test_output_shape(case, batch):
    torch.manual_seed(0)
    model = _build(case)
    assert model(_inputs(model, batch)).shape == (batch,)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(c))
def test_gradients_reach_parameters_and_embeddings(case):
    # Seed 1: SENET at F = 4 has a single hidden unit, and a few draws leave it off for the
    # whole batch (then E' = 0 and SENET's weights get no gradient; see SENET's docstring).
    torch.manual_seed(1)
    model = _build(case)
    x = _inputs(model, 7, requires_grad=True)
    model(x).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name
    for f, e in enumerate(x.fields):
        assert e.grad is not None and e.grad.abs().sum() > 0, f"field {f}"
    if x.linear is not None:
        assert x.linear.grad.abs().sum() > 0


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(c))
def test_tiny_training_run_lowers_loss(case):
    torch.manual_seed(2)
    model = _build(case)
    batch = 32
    emb = nn.Parameter(0.5 * torch.randn(batch, F, D))
    linear = nn.Parameter(torch.zeros(batch, F))
    dense = torch.randn(batch, NUM_DENSE)
    y = (torch.randn(batch) > 0).float()
    opt = torch.optim.Adam([*model.parameters(), emb, linear], lr=0.01)
    losses = []
    for _ in range(60):
        x = ModelInput(list(emb.unbind(1)), dense, linear if model.uses_linear else None)
        loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses[::10]


# ---- hand-computed answers -------------------------------------------------------------

E3 = _t([[[1.0, 2.0], [3.0, -1.0], [0.0, 4.0]]])  # (1, 3, 2)


@pytest.mark.parametrize("squeeze", ["mean", "max"])
def test_senet_known_answer(squeeze):
    senet = SENET(FeatureSpec(3, (2, 2, 2)), SENETParams(reduction_ratio=3, squeeze=squeeze))
    w1, w2 = [0.5, -1.0, 1.0], [1.0, -2.0, 0.5]  # W1 (1 x 3), W2 (3 x 1): hidden max(1, 3 // 3) = 1
    with torch.no_grad():
        senet.squeeze_to_hidden.weight.copy_(_t([w1]))
        senet.hidden_to_weight.weight.copy_(_t([w2]).T)
    rows = E3[0].tolist()
    z = [(a + b) / 2 for a, b in rows] if squeeze == "mean" else [max(a, b) for a, b in rows]
    # mean: z = (1.5, 1, 2), h = 0.75 - 1 + 2 = 1.75; max: z = (2, 3, 4), h = 1 - 3 + 4 = 2
    h = max(0.0, sum(w * zf for w, zf in zip(w1, z)))
    a = [max(0.0, w * h) for w in w2]  # field 1's weight is clipped to 0
    expected = _t([[[a[f] * v for v in rows[f]] for f in range(3)]])
    torch.testing.assert_close(senet(E3), expected)
    assert torch.equal(senet(E3)[0, 1], torch.zeros(2))


def test_fen_known_answer():
    fen = FEN(FeatureSpec(2, (2, 2)), ContextMLPParams(hidden=()))  # a single Linear (4 -> 2)
    with torch.no_grad():
        fen.mlp.net[0].weight.copy_(_t([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]))
        fen.mlp.net[0].bias.zero_()
    e = _t([[[1.0, 0.0], [0.0, 2.0]]])  # logits (1, 2)
    m0 = 2 * math.exp(1) / (math.exp(1) + math.exp(2))
    m1 = 2 * math.exp(2) / (math.exp(1) + math.exp(2))
    torch.testing.assert_close(fen(e), _t([[[m0 * 1.0, 0.0], [0.0, m1 * 2.0]]]))


E2 = _t([[[2.0, 1.0], [1.0, 3.0]]])  # (1, 2, 2)
SPEC2 = FeatureSpec(2, (2, 2))
W_BIT = _t([[[1.0, 0.0], [0.0, -1.0]], [[0.0, 1.0], [1.0, 0.0]]])  # (F, D, D)


def test_fwn_known_answer():
    fwn = FWN(SPEC2)
    with torch.no_grad():
        fwn.weight.copy_(W_BIT)
        fwn.bias.copy_(_t([[0.0, 0.5], [-1.0, 0.0]]))
    # e0 W0 + b0 = (2, -1) + (0, .5) -> ReLU (2, 0) -> times e0: (4, 0)
    # e1 W1 + b1 = (3, 1) + (-1, 0) -> ReLU (2, 1) -> times e1: (2, 3)
    torch.testing.assert_close(fwn(E2), _t([[[2 * 2.0, 0 * 1.0], [2 * 1.0, 1 * 3.0]]]))


def test_vgate_known_answer():
    gate = VGate(SPEC2)
    with torch.no_grad():
        gate.weight.copy_(_t([[[1.0], [2.0]], [[-1.0], [0.5]]]))  # (F, D, 1)
    # g0 = 2*1 + 1*2 = 4; g1 = 1*(-1) + 3*0.5 = 0.5
    torch.testing.assert_close(gate(E2), _t([[[4 * 2.0, 4 * 1.0], [0.5 * 1.0, 0.5 * 3.0]]]))


def test_bgate_known_answer():
    gate = BGate(SPEC2)
    with torch.no_grad():
        gate.weight.copy_(W_BIT)
    # e0 W0 = (2, -1); e1 W1 = (3, 1); no activation
    torch.testing.assert_close(gate(E2), _t([[[2 * 2.0, -1 * 1.0], [3 * 1.0, 1 * 3.0]]]))


class _Const(nn.Module):
    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.value


def test_flu_known_answer():
    flu = FLU(2, 2, ())
    with torch.no_grad():
        flu.weight.copy_(W_BIT)
        flu.bias.copy_(_t([[0.0, 0.5], [-1.0, 0.0]]))
        flu.context.net[0].weight.zero_()
        flu.context.net[0].bias.copy_(_t([1.5, -1.0]))  # context ReLU -> (1.5, 0)
    # local: (2, -0.5) and (2, 1); times (1.5, 0)
    torch.testing.assert_close(flu(E2), _t([[[3.0, 0.0], [3.0, 0.0]]]))


def test_gfrl_gated_combination():
    gfrl = GFRL(SPEC2)
    out = _t([[[10.0, 20.0], [30.0, 40.0]]])
    gfrl.flu_out = _Const(out)
    gfrl.flu_gate = _Const(_t([[[0.0, math.log(3.0)], [-math.log(3.0), 0.0]]]))  # P = .5, .75, .25, .5
    p = _t([[[0.5, 0.75], [0.25, 0.5]]])
    torch.testing.assert_close(gfrl(E2), E2 * (1 - p) + out * p)
    torch.testing.assert_close(gfrl(E2), _t([[[6.0, 15.25], [8.25, 21.5]]]))


def test_ieu_known_answer():
    # Q = K = 0 makes the attention uniform (1/F); V and the projection are identities, the
    # context MLP a constant c = PReLU(bias) = (2, 0.5). Then IEU(E)_f = mean_f(e_f) * c.
    for level in ("bit", "vector"):
        ieu = IEU(2, 2, level, att_size=2, cie_hidden=())
        with torch.no_grad():
            for lin in (ieu.query, ieu.key):
                lin.weight.zero_()
                lin.bias.zero_()
            for lin in (ieu.value, ieu.project):
                lin.weight.copy_(torch.eye(2))
                lin.bias.zero_()
            ieu.context.net[0].weight.zero_()
            ieu.context.net[0].bias.copy_(_t([2.0, 0.5]))
        mean = [(2.0 + 1.0) / 2, (1.0 + 3.0) / 2]  # (1.5, 2)
        bit = [mean[0] * 2.0, mean[1] * 0.5]  # (3, 1), same for both fields
        expected = _t([[bit, bit]]) if level == "bit" else _t([[[sum(bit)], [sum(bit)]]])
        torch.testing.assert_close(ieu(E2), expected)


def test_cs_gate_formula():
    g = _t([[[10.0, 20.0], [30.0, 40.0]]])
    logits = _t([[[0.0, math.log(3.0)], [-math.log(3.0), 0.0]]])  # sigmoid: .5, .75, .25, .5
    # E * w + G * (1 - w) term by term
    expected = _t([[[2 * .5 + 10 * .5, 1 * .75 + 20 * .25], [1 * .25 + 30 * .75, 3 * .5 + 40 * .5]]])
    torch.testing.assert_close(cs_gate(E2, g, logits), expected)
    # vector level: one weight per field broadcast over D
    vec = _t([[[0.0], [math.log(3.0)]]])  # .5, .75
    expected_v = _t([[[2 * .5 + 10 * .5, 1 * .5 + 20 * .5], [1 * .75 + 30 * .25, 3 * .75 + 40 * .25]]])
    torch.testing.assert_close(cs_gate(E2, g, vec), expected_v)


def test_frnet_refiner_and_model_use_the_gate_with_fixed_ieu_outputs():
    torch.manual_seed(3)
    g = _t([[[10.0, 20.0], [30.0, 40.0]]])
    vec = _t([[[0.0], [math.log(3.0)]]])
    refined = _t([[[6.0, 10.5], [8.25, 12.25]]])  # the vector-level case of test_cs_gate_formula
    refiner = FRNetV(SPEC2)
    refiner.ieu_g, refiner.ieu_w = _Const(g), _Const(vec)
    torch.testing.assert_close(refiner(E2), refined)

    model = build_model("frnet", FeatureSpec(2, (2, 2), 1), {"weight_type": "vector", "hidden": (4,)})
    model.refine.ieu_g, model.refine.ieu_w = _Const(g), _Const(vec)
    x = ModelInput(list(E2.unbind(1)), _t([[0.3]]), _t([[0.1, -0.2]]))
    torch.testing.assert_close(model(x), model.backbone(with_fields(x, refined)))


def test_skip_is_identity_and_wrapped_skip_changes_nothing():
    torch.manual_seed(4)
    e = torch.randn(5, F, D)
    assert build_refiner("skip", SPEC)(e) is e
    inner = build_model("deepfm", SPEC, {"hidden": (16,)})
    x = _inputs(inner, 5)
    torch.testing.assert_close(refine_model(inner, "skip")(x), inner(x))


# ---- wrapper and parameter plumbing ----------------------------------------------------------


class _NeedsExtra(CTRModel):
    uses_linear = False

    def extra_embeddings(self):
        return (ExtraEmbedding("co", (0,), 3),)

    def forward(self, x):
        return x.stacked().sum(dim=(1, 2)) + x.extra["co"][0].sum(dim=1)


def test_wrapper_serves_like_the_inner_model():
    assert refine_model(build_model("deepfm", SPEC), "senet").uses_linear is True
    assert refine_model(build_model("dnn", SPEC), "senet").uses_linear is False
    assert build_model("frnet", SPEC, {"backbone": "dnn"}).uses_linear is False
    wrapped = refine_model(build_model("dnn", SPEC, {"hidden": (8,)}), "fwn")
    assert wrapped.params == wrapped.inner.params and wrapped.Params is type(wrapped.inner).Params

    inner = _NeedsExtra(SPEC)
    wrapped = refine_model(inner, "skip")
    assert wrapped.extra_embeddings() == inner.extra_embeddings()
    x = ModelInput([torch.ones(2, D)] * F, torch.zeros(2, NUM_DENSE), extra={"co": [torch.ones(2, 3)]})
    torch.testing.assert_close(wrapped(x), inner(x))


def test_params_are_checked():
    with pytest.raises(ConfigError, match="no_such_key"):
        build_refiner("senet", SPEC, {"no_such_key": 1})
    with pytest.raises(ConfigError):
        build_refiner("senet", SPEC, {"squeeze": "median"})
    with pytest.raises(TypeError):
        build_refiner("senet", SPEC, IEUParams())
    with pytest.raises(KeyError, match="unknown refiner"):
        build_refiner("nope", SPEC)
    with pytest.raises(ValueError, match="one embedding width"):
        build_refiner("fwn", FeatureSpec(2, (2, 3)))
    with pytest.raises(ConfigError, match="backbone"):
        build_model("frnet", SPEC, {"backbone": "nope"})
    with pytest.raises(ConfigError, match="frnet itself"):
        build_model("frnet", SPEC, {"backbone": "frnet"})
