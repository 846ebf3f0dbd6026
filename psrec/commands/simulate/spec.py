"""One schema for `psrec simulate`: the simulator's description (`psrec.sim.config.SimSpec`) of a
*training* configuration (the `psrec train` TOML) or of a measured run's directory.

A simulate file is one of two kinds (`config_kind`):

    simulator  [cluster] [model] ([[model.tables]], dense_params, batch_size) [data] (zipf)
               [options] [calibration] [gpu] [[hardware]] [reference]  (`psrec.sim.config`)
    training   [data] [synthetic] [model] [embedding] [train] [ps] [collective] [workqueue]
               [stragglers] [run]                                  (`psrec.config.Config`)
               + [cluster] [gpu] [calibration] [[hardware]] [reference] from the simulator's schema

From a training configuration (`spec_from_config`): one sim table per (model table, field), so
that every field keeps its own key law (synthetic data: `synthetic.field_cardinalities` and
`field_zipf`; a file source: the schema's cardinality estimates under `DataSpec`'s default
Zipf exponent); dense parameters counted on the model the registry builds; batch =
`data.batch_size`; workers, PS and net from `[ps]` (collective mode: `[collective]`); options
from `[ps]`/`[collective]` and psrec's own wire format (rows, not pooled vectors, in the
all-to-all). `[cluster]` keys override what the training sections give.

This is a command module: it may import the runtime (`psrec.config`, `psrec.core.plan`);
`psrec/sim` itself never does (tests/test_layering.py).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from psrec.config_io import ConfigError, from_mapping

__all__ = ["TRAINING_SECTIONS", "SIM_SECTIONS", "config_kind", "spec_from_config", "training_spec"]

# Sections only the training schema has, only the simulator's has, and those a training file
# may carry from the simulator's (what the training sections cannot say: the machines).
TRAINING_SECTIONS = ("data", "synthetic", "model", "embedding", "train", "ps", "collective", "workqueue",
                     "stragglers", "run")
SIM_SECTIONS = ("cluster", "model", "data", "options", "calibration", "gpu", "hardware", "reference")
_TRAINING_ONLY = tuple(s for s in TRAINING_SECTIONS if s not in SIM_SECTIONS)
_SIM_ONLY = ("options",)
SIM_IN_TRAINING = ("cluster", "gpu", "calibration", "hardware", "reference")


def _keys(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.init}


def config_kind(data: Mapping[str, Any], where: str = "config") -> str:
    """`"training"` or `"simulator"` for a parsed simulate TOML; a section or key that fits
    neither schema, or a file that mixes the two, is a ConfigError naming it.

    >>> config_kind({"cluster": {"workers": 8}, "model": {"tables": []}})
    'simulator'
    >>> config_kind({"ps": {"workers": 4}, "cluster": {"workers": 64}})
    'training'
    """
    from psrec.config import DataConfig, ModelConfig
    from psrec.sim.config import DataSpec, ModelSpec

    for s in data:
        if s not in TRAINING_SECTIONS and s not in SIM_SECTIONS:
            raise ConfigError(f"{where}: unknown section [{s}]; a training config has "
                              f"{', '.join(TRAINING_SECTIONS)} (+ {', '.join(SIM_IN_TRAINING)}), a simulator "
                              f"config has {', '.join(SIM_SECTIONS)}")
    votes: dict[str, list[str]] = {"training": [], "simulator": []}
    for s in data:
        if s in _TRAINING_ONLY:
            votes["training"].append(f"[{s}]")
        elif s in _SIM_ONLY:
            votes["simulator"].append(f"[{s}]")
    for s, train_cls, sim_cls in (("model", ModelConfig, ModelSpec), ("data", DataConfig, DataSpec)):
        table = data.get(s)
        if not isinstance(table, Mapping):
            continue
        tk, sk = _keys(train_cls), _keys(sim_cls)
        for k in table:
            if k not in tk and k not in sk:
                raise ConfigError(f"{where}: {s}.{k} fits neither schema; training [{s}] keys: "
                                  f"{', '.join(sorted(tk))}; simulator [{s}] keys: {', '.join(sorted(sk))}")
            if k in tk and k not in sk:
                votes["training"].append(f"{s}.{k}")
            elif k in sk and k not in tk:
                votes["simulator"].append(f"{s}.{k}")
    if votes["training"] and votes["simulator"]:
        raise ConfigError(f"{where}: mixes the training schema ({', '.join(votes['training'])}) with the "
                          f"simulator's ({', '.join(votes['simulator'])}); use one (a training config takes "
                          f"{', '.join(SIM_IN_TRAINING)} from the simulator's)")
    return "training" if votes["training"] else "simulator"


def _dense_params(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def spec_from_config(cfg: Any, *, mode: str = "ps-async", workers: int | None = None, ps: int | None = None,
                     batch_size: int | None = None, net: str | None = None, cores: float = 0.0,
                     emulated: bool = False, per_mode_compute: bool = False) -> Any:
    """The SimSpec of training Config `cfg` run in `mode` (module doc).

    Args:
        workers, ps, batch_size, net: as run (None = from `cfg`: `[ps]`, or `[collective]` for
            the collective mode; `data.batch_size`); `net` in the `--net` form, "" = none.
        cores: CPU cores the run's processes share (0 = a cluster: each worker its own); a
            shared machine also means the calibrated software costs were measured at the worker
            end of the calls (`SimOptions.software_at_server` = False).
        emulated: `net` is psrec's `--net` emulation (`SimOptions.emulated_net`), not a real network.
        per_mode_compute: the collective mode's compute constant under `<model>/collective`
            (how `psrec.sim.results_map` books a collective run's compute).
    """
    from psrec.core.plan import plan_model
    from psrec.net import NetConfig, parse_net
    from psrec.sim.config import ClusterSpec, DataSpec, ModelSpec, SimOptions, SimSpec, TableSpec

    collective = mode == "collective"
    mp = plan_model(cfg)
    fields = mp.source.schema.fields
    if cfg.data.source == "synthetic":
        cards = tuple(int(c) for c in cfg.synthetic.field_cardinalities)
        exps: tuple[float, ...] | None = tuple(float(z) for z in cfg.synthetic.field_zipf)
    else:  # a file's cardinalities are the reader's estimates; its key law is DataSpec's default
        cards = tuple(max(1, int(f.cardinality)) for f in fields)
        exps = None
    tables, zipf = [], []
    for t in mp.tables:
        for f in t.fields:
            tables.append(TableSpec(f"{t.name}_{f}", rows=cards[f], dim=t.dim, keys_per_sample=1))
            if exps is not None:
                zipf.append(exps[f])
    name = f"{cfg.model.name}/collective" if collective and per_mode_compute else cfg.model.name
    batch = batch_size if batch_size is not None else cfg.data.batch_size
    model = ModelSpec(name=name, tables=tuple(tables), dense_params=_dense_params(mp.model), batch_size=batch)
    if net is None:
        net = cfg.collective.net if collective else cfg.ps.net
    nworkers = workers if workers is not None else (cfg.collective.workers if collective else cfg.ps.workers)
    cluster = ClusterSpec(workers=nworkers, ps=ps if ps is not None else cfg.ps.num_ps,
                          net=parse_net(net, where="net") if net else NetConfig(), cores=cores)
    options = SimOptions(partitioner=cfg.ps.partitioner, dense_on_ps=cfg.ps.dense == "ps", alltoall_payload="rows",
                         overlap_allreduce=cfg.collective.overlap, bucket_bytes=cfg.collective.bucket_bytes,
                         software_at_server=not cores, emulated_net=bool(net) and emulated)
    data = DataSpec(zipf_per_table=tuple(zipf)) if exps is not None else DataSpec()
    return SimSpec(cluster=cluster, model=model, data=data, options=options)


def _route(overrides: list[str] | tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Split `section.key=value` overrides into the training config's and the simulator's."""
    train, sim = [], []
    for item in overrides:
        section = item.partition("=")[0].strip().split(".")[0]
        (train if section in TRAINING_SECTIONS else sim).append(item)
    return train, sim


def _sim_sections(spec: Any, data: Mapping[str, Any], where: str) -> Any:
    """`spec` with a training file's [cluster] [gpu] [calibration] [[hardware]] applied over it."""
    from psrec.net import NetConfig, NetConfigError
    from psrec.sim.config import ClusterSpec, SimSpec

    out = spec
    cluster = data.get("cluster")
    if cluster is not None:
        if not isinstance(cluster, Mapping):
            raise ConfigError(f"{where}: cluster: expected a table")
        base = {k: getattr(spec.cluster, k) for k in _keys(ClusterSpec)}
        table = dict(cluster)
        if "net" in table:
            try:
                table["net"] = NetConfig.from_mapping(table["net"], where="cluster.net")
            except NetConfigError as e:
                raise ConfigError(str(e)) from None
        out = dataclasses.replace(out, cluster=from_mapping(ClusterSpec, {**base, **table}, where="cluster"))
    rest = {k: data[k] for k in ("gpu", "calibration", "hardware", "reference") if k in data}
    if rest:
        extra = from_mapping(SimSpec, rest)
        out = dataclasses.replace(out, **{k: getattr(extra, k) for k in rest})
    return out


def training_spec(data: Mapping[str, Any], overrides: list[str] | tuple[str, ...] = (),
                  where: str = "config") -> Any:
    """SimSpec of a parsed training TOML (+ [cluster] ...) and its overrides: training-section
    keys go to the training config, the rest (cluster., options., gpu., calibration., rows) to
    the simulator's spec (`psrec.sim.sweep.set_input`)."""
    from psrec.config import load_config
    from psrec.sim.sweep import set_input

    train_over, sim_over = _route(overrides)
    base = {k: v for k, v in data.items() if k in TRAINING_SECTIONS}
    cfg = load_config(None, train_over, base=base)
    try:
        spec = _sim_sections(spec_from_config(cfg), data, where)
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{where}: {e}") from None
    for item in sim_over:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        from psrec.config_io import parse_value

        try:
            spec = set_input(spec, key.strip(), parse_value(value))
        except (ValueError, TypeError) as e:
            raise ConfigError(f"--set {item!r}: {e}") from None
    return spec
