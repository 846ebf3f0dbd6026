"""A collective job resolved on the driver: model, tables, buckets and the work split
(picklable, handed to every rank)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from collective.config import CollectiveConfig, collective_config_for
from collective.worker import CollectiveWorker
from psrec.config import Config
from psrec.data.factory import make_source
from psrec.embedding.layer import EmbeddingLayer, TableSpec
from psrec.models.base import FeatureSpec
from psrec.train.local import row_ranges
from psrec.train.plan import count_rounds, plan_model

__all__ = ["CollectivePlan", "plan_collective"]


@dataclass
class CollectivePlan:
    """What every rank needs to build its part of a collective job (picklable)."""

    cfg: Config
    coll: CollectiveConfig
    spec: FeatureSpec
    tables: list[TableSpec]
    ev_configs: dict  # table -> EVConfig
    dense_init: np.ndarray  # (P,) the driver model's initial dense parameters
    param_numels: list[int]  # elements of each trainable dense parameter, registration order
    rounds: int
    batch_size: int
    base_row: int

    def build_worker(self, comm, source=None) -> CollectiveWorker:
        """Rank `comm.rank`'s worker: a replica with the plan's initial parameters, its shard."""
        import torch

        from collective.dense_sync import DenseSync
        from collective.sharded_store import ShardedStore
        from collective.sharding import make_sharding
        from psrec.net import parse_net
        from psrec.ps.dense import set_flat_params

        cfg, c = self.cfg, self.coll
        torch.manual_seed(cfg.train.seed)
        source = source or make_source(cfg)
        model = cfg.build_model(self.spec)
        set_flat_params(model, self.dense_init)
        layer = EmbeddingLayer(source.schema, self.tables, cfg.embedding.pooling)
        dense = DenseSync(model, comm, c.bucket_bytes, c.overlap)
        # DenseSync scales the loss gradient by 1/N at the model's output, so the embedding
        # rows' gradients arrive pre-scaled too: their owners sum them.
        store = ShardedStore(comm, self.ev_configs, make_sharding(c.sharding, comm.world_size, self.tables),
                             average=False)
        return CollectiveWorker(comm.rank, comm.world_size, model, layer, store, dense, source,
                                cfg.train.optimizer, cfg.train.lr, parse_net(c.net) if c.net else None)


def plan_collective(cfg: Config, coll: CollectiveConfig | None = None, source=None) -> CollectivePlan:
    """Resolve model, tables and the work split on the driver (seeded like `build_local`)."""
    from psrec.ps.dense import flat_params

    coll = coll or collective_config_for(cfg)
    mp = plan_model(cfg, source)
    source, spec, model, tables, ev_configs = mp.source, mp.spec, mp.model, mp.tables, mp.ev_configs
    rr = row_ranges(cfg, source)
    bs = cfg.data.batch_size
    rounds = count_rounds(cfg, rr.train_end - rr.train_start, coll.workers)
    numels = [p.numel() for p in model.parameters() if p.requires_grad]
    return CollectivePlan(cfg, coll, spec, tables, ev_configs, flat_params(model), numels, rounds, bs,
                          rr.train_start)
