"""A run's configuration: one typed dataclass per concept, loaded from TOML plus `--set` overrides.

    [data]        DataConfig       which source, which rows train and which evaluate
    [synthetic]   SyntheticConfig  the generator (psrec.data.synthetic)
    [model]       ModelConfig      registered model name, refinement, [model.params]
    [embedding]   EmbeddingConfig  table layout, width, sparse optimizer
    [train]       TrainConfig      steps, dense optimizer, seed
    [ps]          PSConfig         parameter servers, workers, sync, dense placement, network
    [collective]  CollectiveConfig collective workers: sharding, buckets, overlap
    [workqueue]   WorkQueueConfig  row-range tasks handed to workers (ps.data / collective.data = "queue")
    [stragglers]  StragglerConfig  injected slowdowns (applied as extra compute time)
    [shares]      SharesConfig     speed-proportional shares of a synchronous step's rows
    [run]         RunConfig        where results go

An unknown key, or a value of the wrong type, is a `ConfigError` naming the key.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from collective.config import CollectiveConfig
from psrec.config_io import ConfigError, from_mapping, parse_value, to_mapping, to_toml
from psrec.data.features import FeatureConfig
from psrec.data.synthetic import SyntheticConfig
from psrec.ev.config import EVConfig, FilterConfig, InitializerConfig, OptimizerConfig
from psrec.ps.config import PSConfig
from workqueue.config import WorkQueueConfig
from workqueue.shares import SharesConfig
from workqueue.stragglers import StragglerConfig

__all__ = ["DataConfig", "ModelConfig", "EmbeddingConfig", "TrainConfig", "RunDirConfig",
           "Config", "load_config", "ConfigError"]


@dataclass(frozen=True)
class DataConfig:
    """Which data, and which rows train, validate and test.

    Your own files (`source = "files"`, implied by `train_path`): `format`, `train_path` (a path
    or glob, comma-separated for several), optional `valid_path` and `test_path` (else the last
    `test_share` of the train rows is held out), `label`, `[[data.features]]`; every train row
    trains (`train.max_steps` caps it), valid and test rows are evaluated apart.

    One source's rows (synthetic, or a preset with `path`): rows `[0, train_rows)` train and
    `[eval_start, eval_start + eval_rows)` evaluate; with `eval_start < 0` evaluation starts
    right after the training rows (a held-out range).
    """

    source: str = "synthetic"  # a registered source name (psrec/data/registry.py)
    path: str = ""  # one file for a preset source (criteo, avazu, movielens), legacy layout
    format: Literal["csv", "tsv", "parquet", "libsvm", "libfm"] = "csv"  # the reader of source = "files"
    train_path: str = ""  # path or glob of the training files; setting it means source = "files" unless a preset
    valid_path: str = ""  # optional validation files, evaluated apart (valid_auc in the result)
    test_path: str = ""  # optional test files; empty: the last test_share of the train rows
    test_share: float = 0.1  # held out for testing when there is no test file: 10% is the usual share
    label: str = "label"  # the label column (0/1; libsvm -1/+1 too)
    label_threshold: float = 0.0  # 0: labels must be 0/1; else label = value >= threshold (ratings)
    columns: tuple[str, ...] = ()  # csv/tsv column names when the file has no header line
    shuffle: bool = False  # a fresh seeded block order each epoch (train.seed, epoch: data/shuffle.py); off: file order
    shuffle_block: int = 256  # rows read in file order per shuffled block: one seek each, 4 blocks a 1024 batch
    prefetch: int = 2  # local: batches read ahead while the step trains (by data.reader); 0: read inline
    # auto: a reader process for a long run (psrec/core/local.py: AUTO_PROCESS_ROWS), else inline. A thread shares
    # the GIL with the step: benchmarks/reader_bench.py (DeepFM, CSV) measured a process x1.57 the samples/s of
    # inline, a thread x0.98
    reader: Literal["auto", "process", "thread"] = "auto"
    features: tuple[FeatureConfig, ...] = ()  # [[data.features]]: name, type, transform, separator, max_len
    strict: bool = False  # a malformed line is an error instead of a counted, reported skip
    train_rows: int = 1_000_000  # enough for DeepFM to learn the planted interactions in ~1 epoch
    eval_rows: int = 200_000  # AUC std error ~0.001 at this size
    eval_start: int = -1
    batch_size: int = 1024  # measured: 4096 learns the planted interactions worse in one epoch (fewer sparse steps)
    epochs: int = 1

    def __post_init__(self) -> None:
        if self.train_path and self.source == "synthetic":
            object.__setattr__(self, "source", "files")  # a train_path names the user's own files
        if self.source in ("criteo", "avazu", "movielens") and not (self.path or self.train_path):
            raise ValueError(f"data.path (one file) or data.train_path is required for source {self.source!r}")
        if self.source == "files":
            if not self.train_path:
                raise ValueError("data.train_path is required for source 'files'")
            if not self.features:
                raise ValueError("data.features: name at least one [[data.features]] entry "
                                 "(`psrec data inspect FILE` suggests a block to paste)")
        if (self.valid_path or self.test_path) and not self.train_path:
            raise ValueError("data.valid_path and data.test_path need data.train_path")
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError(f"data.features: names must be unique, got {names}")
        if not 0.0 < self.test_share < 1.0:
            raise ValueError(f"data.test_share must be in (0, 1), got {self.test_share}")
        if self.train_rows < 1 or self.eval_rows < 0:
            raise ValueError("data.train_rows must be >= 1 and data.eval_rows >= 0")
        if self.batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {self.batch_size}")
        if self.epochs < 1:
            raise ValueError(f"data.epochs must be >= 1, got {self.epochs}")
        if self.shuffle_block < 1:
            raise ValueError(f"data.shuffle_block must be >= 1, got {self.shuffle_block}")
        if self.prefetch < 0:
            raise ValueError(f"data.prefetch must be >= 0, got {self.prefetch}")
        if self.reader not in ("auto", "process", "thread"):
            raise ValueError(f"data.reader must be auto, process or thread, got {self.reader!r}")


@dataclass(frozen=True)
class ModelConfig:
    """A registered model (`psrec models` lists them) and its hyperparameters."""

    name: str = "deepfm"
    params: dict[str, Any] = field(default_factory=dict)  # checked against the model's Params
    refine: str = "none"  # a feature-refinement module put in front of the model (senet, fen, frnet_v, ...)
    refine_params: dict[str, Any] = field(default_factory=dict)  # checked against the refiner's Params


@dataclass(frozen=True)
class EmbeddingConfig:
    """Embedding tables: layout, and the embedding-variable settings every table gets.

    `[embedding.optimizer]`, `[embedding.initializer]` and `[embedding.filter]` are the EV
    core's own config sections (psrec.ev.config).
    """

    dim: int = 16  # Criteo-scale models commonly use 10-16
    # Per-field widths, one per field (FDO's output); empty = `dim` for every field. Fields of
    # equal width share a table. Only models that accept per-field widths can use it (DNN, DCN family).
    field_dims: tuple[int, ...] = ()
    sharing: Literal["shared", "per_field"] = "shared"  # one table for all fields (keys carry the field) or one each
    pooling: Literal["sum", "mean"] = "sum"  # for multi-valued fields
    initializer: InitializerConfig = field(
        default_factory=lambda: InitializerConfig(kind="normal", scale=0.01))  # small: FM's pairwise term starts near 0
    # Adagrad with a tiny initial accumulator: with a batch-mean loss, TF's 0.1 makes the first
    # steps ~100x too small (measured on the default data: LR AUC 0.58 vs 0.66 after 500K rows).
    optimizer: OptimizerConfig = field(
        default_factory=lambda: OptimizerConfig(name="adagrad", lr=0.03, initial_accumulator=1e-6))
    filter: FilterConfig = field(default_factory=FilterConfig)  # no admission filter
    steps_to_live: int = 0  # 0 = no TTL eviction
    l2_evict_threshold: float = 0.0  # 0 = no L2-weight eviction

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"embedding.dim must be >= 1, got {self.dim}")
        if any(d < 1 for d in self.field_dims):
            raise ValueError(f"embedding.field_dims must all be >= 1, got {self.field_dims}")
        if self.steps_to_live < 0 or self.l2_evict_threshold < 0:
            raise ValueError("embedding.steps_to_live and embedding.l2_evict_threshold must be >= 0")

    def ev_config(self, dim: int, seed: int) -> EVConfig:
        """The EVConfig of one table of width `dim`."""
        return EVConfig(dim=dim, seed=seed, initializer=self.initializer, optimizer=self.optimizer,
                        filter=self.filter, steps_to_live=self.steps_to_live,
                        l2_evict_threshold=self.l2_evict_threshold)


@dataclass(frozen=True)
class TrainConfig:
    """The dense side of training and reproducibility."""

    optimizer: Literal["adam", "sgd", "adagrad", "ftrl"] = "adam"
    lr: float = 1e-3
    seed: int = 0
    max_steps: int = 0  # 0 = run the whole training range
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    progress: bool = True  # show a progress bar
    # steps per worker left out of steady-state figures (throughput, step times, comm share):
    # first-call allocations, tables growing from empty, first connections
    warmup_steps: int = 2
    # Collective runs: "keys" sends the next batch's keys to their owners (read, dedup, routing,
    # the key all-to-all, on a second group) while this batch trains, its rows fetched after
    # this step's update (results unchanged); "stale1" fetches the rows ahead too, one step
    # stale. "off": one step after the other.
    pipeline: Literal["off", "keys", "stale1"] = "off"

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        if self.max_steps < 0 or self.threads < 0 or self.warmup_steps < 0:
            raise ValueError("train.max_steps, train.threads and train.warmup_steps must be >= 0")


@dataclass(frozen=True)
class RunDirConfig:
    """Where a run writes its configuration, results, checkpoints and model."""

    dir: str = "runs"
    name: str = ""  # default: <time>-<mode>-<model>
    # A checkpoint every this many global steps (0: none). Each one is a barrier: every worker
    # finishes the step, the job's state is written, training goes on. 1000 steps: a 4M-row
    # table's checkpoint then costs a few percent of training (benchmarks/checkpoint_bench.py)
    checkpoint_every_steps: int = 1000
    # the newest ones kept (with the bases they continue); older ones go once a new one is complete
    keep_checkpoints: int = 2
    # Every this many checkpoints one is full; those in between hold only the table rows updated
    # since the previous one (DeepRec's incremental checkpoint). 10: a restore reads at most one
    # full checkpoint and 9 increments, and the full one's cost is spread over 10 intervals (1: all full)
    full_checkpoint_every: int = 10
    save_model: bool = True  # the final model (tables + dense + config) into <run dir>/model
    # A worker whose step count has not moved for this long stops the job, naming it: no
    # silent hangs (a sync step waits on every worker; 5 minutes is far beyond any one step)
    stall_timeout_s: float = 300.0
    # "recover": a worker or PS that dies (or hangs) restarts the job from the newest checkpoint
    # (sync training rolls back to it; async loses the updates since it), at most max_restarts
    # times; "fail": the job stops, naming what failed
    on_failure: Literal["fail", "recover"] = "fail"
    max_restarts: int = 3
    # The driver's Prometheus endpoint: 127.0.0.1 keeps it on this host (0.0.0.0 to scrape it
    # from elsewhere); port 0 picks a free one unless the mode's own (ps/collective.metrics_port) is set
    metrics_address: str = "127.0.0.1"
    metrics_port: int = 0

    def __post_init__(self) -> None:
        if self.checkpoint_every_steps < 0:
            raise ValueError(f"run.checkpoint_every_steps must be >= 0, got {self.checkpoint_every_steps}")
        if self.keep_checkpoints < 1:
            raise ValueError(f"run.keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        if self.full_checkpoint_every < 1:
            raise ValueError(f"run.full_checkpoint_every must be >= 1, got {self.full_checkpoint_every}")
        if self.max_restarts < 0:
            raise ValueError(f"run.max_restarts must be >= 0, got {self.max_restarts}")
        if not self.stall_timeout_s > 0:
            raise ValueError(f"run.stall_timeout_s must be > 0, got {self.stall_timeout_s}")
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"run.metrics_port must be 0 (a free port) or a port, got {self.metrics_port}")


@dataclass(frozen=True)
class Config:
    """Everything a run needs; sections mirror the TOML file."""

    data: DataConfig = field(default_factory=DataConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ps: PSConfig = field(default_factory=PSConfig)
    collective: CollectiveConfig = field(default_factory=CollectiveConfig)
    workqueue: WorkQueueConfig = field(default_factory=WorkQueueConfig)
    stragglers: StragglerConfig = field(default_factory=StragglerConfig)
    shares: SharesConfig = field(default_factory=SharesConfig)
    run: RunDirConfig = field(default_factory=RunDirConfig)

    def model_params(self):
        """The model's Params dataclass, validated (errors name `model.params.<key>`)."""
        from psrec.models import get_model_class

        try:
            cls = get_model_class(self.model.name)
        except KeyError as e:
            raise ConfigError(f"model.name: {e.args[0]}") from None
        return from_mapping(cls.Params, self.model.params, where="model.params")

    def build_model(self, spec):
        """The configured model for `spec`, with its refinement module in front if one is set."""
        from psrec.models import build_model
        from psrec.models.refine import refine_model

        model = build_model(self.model.name, spec, self.model_params())
        if self.model.refine == "none":
            return model
        return refine_model(model, self.model.refine, self.refine_params())

    def refine_params(self):
        """The refiner's Params dataclass, validated (errors name `model.refine_params.<key>`)."""
        from psrec.models.refine import get_refiner_class

        try:
            cls = get_refiner_class(self.model.refine)
        except KeyError as e:
            raise ConfigError(f"model.refine: {e.args[0]}") from None
        return from_mapping(cls.Params, self.model.refine_params, where="model.refine_params")

    def to_dict(self) -> dict[str, Any]:
        return to_mapping(self)

    def to_toml(self) -> str:
        return to_toml(self.to_dict())


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"--set {dotted!r}: expected section.key=value")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted!r}: {p!r} is a value, not a section")
    node[parts[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                base: dict[str, Any] | None = None) -> Config:
    """Defaults <- `base` <- TOML file at `path` <- `overrides` ("section.key=value").

    Raises ConfigError naming the key for an unknown key or a wrongly typed value.
    """
    data: dict[str, Any] = {}
    for k, v in (base or {}).items():
        data[k] = dict(v) if isinstance(v, dict) else v
    if path is not None:
        try:
            with open(path, "rb") as fh:
                loaded = tomllib.load(fh)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: {e}") from None
        for k, v in loaded.items():
            if isinstance(v, dict) and isinstance(data.get(k), dict):
                data[k] = {**data[k], **v}
            else:
                data[k] = v
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        key, text = item.split("=", 1)
        _set_path(data, key.strip(), parse_value(text.strip()))
    cfg = from_mapping(Config, data)
    cfg.model_params()  # fail now, naming the key, rather than when the model is built
    from psrec.data.registry import source_names

    if cfg.data.source not in source_names():
        raise ConfigError(f"data.source: unknown source {cfg.data.source!r}; known: {', '.join(source_names())}")
    if cfg.ps.data == "queue" and cfg.ps.sync:
        raise ConfigError("ps.data: the work queue feeds asynchronous PS workers only (a sync step "
                          "needs every worker every step); set ps.sync=false or ps.data=\"interleaved\"")
    if cfg.model.refine != "none":
        cfg.refine_params()
    return cfg


def with_section(cfg: Config, **sections: Any) -> Config:
    """A copy of `cfg` with whole sections replaced (used by runners that sweep a setting)."""
    return replace(cfg, **sections)
