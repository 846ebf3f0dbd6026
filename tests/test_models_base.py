import pytest
import torch

from psrec.models import FeatureSpec, ModelInput, build_model, model_names
from psrec.models.layers import fm_second_order

BASE = ["lr", "fm", "dnn", "deepfm"]


def make_input(b: int, spec: FeatureSpec, seed: int = 0) -> ModelInput:
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(b, spec.num_fields, spec.embed_dim, generator=g, requires_grad=True)
    lin = torch.randn(b, spec.num_fields, generator=g, requires_grad=True)
    return ModelInput.from_stacked(emb, torch.randn(b, spec.num_dense, generator=g), linear=lin)


def test_fm_identity_matches_double_sum():
    e = torch.randn(5, 6, 4, dtype=torch.float64)
    double = sum((e[:, i] * e[:, j]).sum(-1) for i in range(6) for j in range(i + 1, 6))
    torch.testing.assert_close(fm_second_order(e), double)


@pytest.mark.parametrize("name", BASE)
@pytest.mark.parametrize("b", [1, 7])
def test_shapes_and_gradients(name, b):
    spec = FeatureSpec(4, (3,) * 4, 2)
    torch.manual_seed(0)
    m = build_model(name, spec, {"hidden": (8,)} if name in ("dnn", "deepfm") else {})
    x = make_input(b, spec)
    out = m(x)
    assert out.shape == (b,)
    out.sum().backward()
    if name != "lr":
        assert x.emb.grad is not None and x.emb.grad.abs().sum() > 0
    if m.uses_linear:
        assert x.linear.grad is not None and torch.all(x.linear.grad == 1.0)
    for n, p in m.named_parameters():
        assert p.grad is not None, n


def test_fm_model_value_by_hand():
    spec = FeatureSpec(2, (2, 2), 0)
    m = build_model("fm", spec)
    e = torch.tensor([[[1.0, 2.0], [3.0, -1.0]]])
    x = ModelInput.from_stacked(e, torch.zeros(1, 0), linear=torch.tensor([[0.5, 0.25]]))
    # bias 0 + 0.5 + 0.25 + <(1,2),(3,-1)> = 0.75 + 1
    assert m(x).item() == pytest.approx(1.75)


def test_registry_lists_base_models_and_rejects_unknown():
    assert set(BASE) <= set(model_names())
    with pytest.raises(KeyError, match="unknown model"):
        build_model("nope", FeatureSpec(1, (1,), 0))


def test_uniform_width_required_by_fm():
    with pytest.raises(ValueError, match="one embedding width"):
        build_model("fm", FeatureSpec(2, (2, 3), 0))
