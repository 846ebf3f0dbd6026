"""What every training path resolves the same way before it starts: the model for the
source's schema, its tables and their EV configurations, and the number of steps.

Local, PS and collective training all call these, so the three build identical models
and tables from one configuration (the equivalence oracles depend on it).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from psrec.data.base import DataSource
from psrec.data.factory import make_source
from psrec.embedding.layer import EmbeddingLayer, TableSpec, plan_tables
from psrec.embedding.local import table_seed
from psrec.ev import EVConfig
from psrec.models.base import CTRModel, FeatureSpec

__all__ = ["ModelPlan", "plan_model", "build_replica", "stragglers_of"]


@dataclass
class ModelPlan:
    """The source, the model (seeded from `train.seed`), its tables and each table's EVConfig."""

    source: DataSource
    spec: FeatureSpec
    model: CTRModel
    tables: list[TableSpec]
    ev_configs: dict[str, EVConfig]


def plan_model(cfg, source: DataSource | None = None) -> ModelPlan:
    """Seed torch, build the configured model for the source's schema, plan its tables.

    Per-field widths come from `embedding.field_dims` when set, else `embedding.dim` for all.
    """
    torch.manual_seed(cfg.train.seed)
    source = source or make_source(cfg)
    nf = source.schema.num_fields
    dims = cfg.embedding.field_dims or (cfg.embedding.dim,) * nf
    if len(dims) != nf:
        raise ValueError(f"embedding.field_dims has {len(dims)} widths for {nf} fields")
    spec = FeatureSpec(nf, dims, source.schema.num_dense)
    model = cfg.build_model(spec)
    tables = plan_tables(source.schema, model, dims, cfg.embedding.sharing)
    ev_configs = {t.name: cfg.embedding.ev_config(t.dim, table_seed(cfg.train.seed, t.name)) for t in tables}
    return ModelPlan(source, spec, model, tables, ev_configs)


def build_replica(cfg, spec: FeatureSpec, tables: list[TableSpec], dense_init, source: DataSource):
    """A worker's (model, embedding layer): the model seeded as on the driver and set to the
    driver's initial dense parameters `dense_init` (P,), so every replica starts identical."""
    from psrec.core.flat import set_flat_params

    torch.manual_seed(cfg.train.seed)
    model = cfg.build_model(spec)
    set_flat_params(model, dense_init)
    return model, EmbeddingLayer(source.schema, tables, cfg.embedding.pooling)


def stragglers_of(cfg, workers: int):
    """The configured straggler model ([stragglers]) over `workers` workers, or None when
    nobody is slowed (`workqueue.stragglers`: PS workers and collective ranks alike)."""
    sc = cfg.stragglers
    if not (sc.factors or sc.dist != "none" or sc.period_rate_per_s > 0):
        return None
    from workqueue.stragglers import Stragglers

    return Stragglers(sc, workers)
