"""EVConfig loads from TOML through config_io and rejects bad values naming the field."""
from __future__ import annotations

import tomllib

import pytest

from psrec.config_io import ConfigError, from_mapping, to_mapping
from psrec.ev import EVConfig, FilterConfig, OptimizerConfig, make_filter, make_optimizer, optimizer_names

TOML = """
dim = 16
seed = 7
steps_to_live = 1000
l2_evict_threshold = 1e-6
[initializer]
kind = "uniform"
scale = 0.01
[optimizer]
name = "gftrl"
lr = 0.05
l1 = 0.001
[filter]
kind = "bloom"
min_freq = 3
false_positive_rate = 0.001
expected_keys = 100000
"""


def test_loads_from_toml_and_round_trips():
    cfg = from_mapping(EVConfig, tomllib.loads(TOML), where="tables.user")
    assert cfg.dim == 16 and cfg.optimizer.name == "gftrl" and cfg.filter.kind == "bloom"
    assert cfg.initializer.kind == "uniform" and cfg.steps_to_live == 1000
    assert from_mapping(EVConfig, to_mapping(cfg)) == cfg


def test_defaults_need_only_dim():
    cfg = from_mapping(EVConfig, {"dim": 8})
    assert cfg.optimizer.name == "adagrad" and cfg.filter.kind == "none" and cfg.steps_to_live == 0
    with pytest.raises(ConfigError, match="dim"):
        from_mapping(EVConfig, {})


@pytest.mark.parametrize("data,field", [
    ({"dim": 0}, "dim"),
    ({"dim": 4, "steps_to_live": -1}, "steps_to_live"),
    ({"dim": 4, "l2_evict_threshold": -0.1}, "l2_evict_threshold"),
    ({"dim": 4, "optimizer": {"lr": 0.0}}, "optimizer.lr"),
    ({"dim": 4, "optimizer": {"beta1": 1.0}}, "optimizer.beta1"),
    ({"dim": 4, "optimizer": {"name": "lamb"}}, "optimizer.name"),
    ({"dim": 4, "filter": {"kind": "counter", "min_freq": 0}}, "filter.min_freq"),
    ({"dim": 4, "filter": {"false_positive_rate": 1.5}}, "filter.false_positive_rate"),
    ({"dim": 4, "initializer": {"scale": -1.0}}, "initializer.scale"),
    ({"dim": 4, "optimizer": {"momentum": 0.9}}, "momentum"),
])
def test_bad_values_name_the_field(data, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        from_mapping(EVConfig, data, where="tables.user")


def test_every_optimizer_and_filter_is_registered():
    assert optimizer_names() == ["adagrad", "adam", "adam_async", "ftrl", "gftrl", "sgd"]
    for name in optimizer_names():
        assert make_optimizer(OptimizerConfig(name=name), 4).name == name
    for kind in ("none", "counter", "bloom"):
        assert make_filter(FilterConfig(kind=kind), 0).kind == kind
