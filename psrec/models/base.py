"""The model interface: embeddings and dense features in, logits out.

A model owns no embedding tables. The embedding layer (local tables, parameter servers or
collective shards) looks the batch's keys up and hands the model a `ModelInput`; gradients
flow back into `ModelInput.emb` / `ModelInput.linear` and from there to whichever store
served them. This is what lets the same model train locally, on a PS and collectively.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

__all__ = ["FeatureSpec", "ModelInput", "CTRModel", "NoParams", "ExtraEmbedding"]


@dataclass(frozen=True)
class FeatureSpec:
    """What a model is built for.

    Args:
        num_fields: F, the number of categorical fields.
        embed_dims: per-field embedding width; all equal unless a per-field plan (FDO) is used.
        num_dense: number of dense float features.
    """

    num_fields: int
    embed_dims: tuple[int, ...]
    num_dense: int = 0

    def __post_init__(self) -> None:
        if len(self.embed_dims) != self.num_fields:
            raise ValueError(f"embed_dims has {len(self.embed_dims)} entries for {self.num_fields} fields")
        if any(d <= 0 for d in self.embed_dims):
            raise ValueError(f"embed_dims must be positive, got {self.embed_dims}")

    @property
    def uniform_dim(self) -> bool:
        return len(set(self.embed_dims)) == 1

    @property
    def embed_dim(self) -> int:
        """D when every field has the same width; models that need a stacked (B, F, D) ask this."""
        if not self.uniform_dim:
            raise ValueError(f"this model needs one embedding width for all fields, got {self.embed_dims}")
        return self.embed_dims[0]

    @property
    def flat_dim(self) -> int:
        """Width of all field embeddings concatenated: sum of embed_dims."""
        return sum(self.embed_dims)


@dataclass(frozen=True)
class ExtraEmbedding:
    """An embedding table a model needs beyond the per-field embeddings.

    The embedding layer serves it like any other table (locally, from a PS or a collective
    shard): for each field in `fields`, the row of that field's key in a table of width `dim`.
    CAN's co-action embeddings are the example: the induction field's key gets a second,
    wider row that the model reshapes into MLP weights.

    Args:
        name: table name, unique within the model; the rows arrive as `ModelInput.extra[name]`.
        fields: field indices whose keys are looked up in this table.
        dim: row width.
    """

    name: str
    fields: tuple[int, ...]
    dim: int


@dataclass
class ModelInput:
    """One batch as a model sees it.

    fields: per-field embeddings, each (B, D_f) float32 (multi-valued fields already pooled).
    dense:  (B, num_dense) float32.
    linear: (B, F) float32 first-order weights per field (sum over a multi-valued field's keys),
            present when the model sets `uses_linear`.
    extra:  for each `ExtraEmbedding` the model asked for, one (B, dim) tensor per listed field.
    """

    fields: list[torch.Tensor]
    dense: torch.Tensor
    linear: torch.Tensor | None = None
    extra: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    emb: torch.Tensor | None = None  # (B, F, D) when the embedding layer already has it stacked

    @classmethod
    def from_stacked(cls, emb: torch.Tensor, dense: torch.Tensor, **kw) -> ModelInput:
        """Build from a stacked (B, F, D) tensor without copying it."""
        return cls(fields=list(emb.unbind(1)), dense=dense, emb=emb, **kw)

    @property
    def batch_size(self) -> int:
        return self.dense.shape[0]

    def stacked(self) -> torch.Tensor:
        """(B, F, D): needs equal widths."""
        return self.emb if self.emb is not None else torch.stack(self.fields, dim=1)

    def flat(self) -> torch.Tensor:
        """(B, sum D_f): all field embeddings concatenated, the usual MLP input."""
        if self.emb is not None:
            return self.emb.reshape(self.emb.shape[0], -1)
        return torch.cat(self.fields, dim=1)


@dataclass(frozen=True)
class NoParams:
    """For models without hyperparameters."""


class CTRModel(nn.Module):
    """Base class for CTR models.

    Subclasses set `Params` to a frozen dataclass of their hyperparameters (what
    `[model.params]` in a config file is checked against), set `uses_linear` when they want
    first-order per-key weights, and implement `forward(x: ModelInput) -> (B,) logits`.
    """

    Params: ClassVar[type] = NoParams
    uses_linear: ClassVar[bool] = False

    def __init__(self, spec: FeatureSpec, params=None) -> None:
        super().__init__()
        self.spec = spec
        self.params = params if params is not None else self.Params()

    def extra_embeddings(self) -> tuple[ExtraEmbedding, ...]:
        """Tables beyond the per-field embeddings that this model needs served."""
        return ()

    def forward(self, x: ModelInput) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
