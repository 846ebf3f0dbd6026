"""A replica's dense state as plain arrays: parameters, optimizer state, RNG (no pickle).

Checkpoints and saved models store it with `psrec.core.checkpoint.save_arrays`, so numpy
alone reads it back; torch's own `torch.save` would pickle.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from psrec.core.checkpoint import CheckpointError, load_arrays, save_arrays

__all__ = ["save_dense", "load_dense"]


def save_dense(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
               rng: bool = False) -> None:
    """`model`'s parameters (`p.<name>`), `optimizer`'s state (`opt.<i>.<key>`, scalars in the
    meta) and, with `rng`, torch's CPU RNG state, into `path`."""
    arrays: dict[str, np.ndarray] = {f"p.{n}": p.detach().numpy() for n, p in model.named_parameters()}
    meta: dict[str, Any] = {"params": [n for n, _ in model.named_parameters()]}
    if optimizer is not None:
        sd = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for i, st in sd["state"].items():
            for k, v in st.items():
                if torch.is_tensor(v):
                    arrays[f"opt.{i}.{k}"] = v.detach().cpu().numpy()
                else:
                    scalars.setdefault(str(i), {})[k] = v
        meta["optimizer"] = {"class": type(optimizer).__name__, "param_groups": sd["param_groups"],
                             "scalars": scalars, "state_keys": {str(i): sorted(st) for i, st in sd["state"].items()}}
    if rng:
        arrays["rng.torch"] = torch.get_rng_state().numpy()
    save_arrays(path, arrays, meta)


def load_dense(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
               rng: bool = False) -> None:
    """Restore what `save_dense` wrote into `model` (and `optimizer`, and torch's RNG)."""
    arrays, meta = load_arrays(path)
    names = [n for n, _ in model.named_parameters()]
    if meta.get("params") != names:
        raise CheckpointError(f"{path}: dense parameters {meta.get('params')} do not match the model's {names}")
    with torch.no_grad():
        for n, p in model.named_parameters():
            a = arrays[f"p.{n}"]
            if tuple(a.shape) != tuple(p.shape):
                raise CheckpointError(f"{path}: parameter {n} has shape {a.shape}, the model's is {tuple(p.shape)}")
            p.copy_(torch.from_numpy(a))
    if optimizer is not None:
        om = meta.get("optimizer")
        if om is None or om["class"] != type(optimizer).__name__:
            raise CheckpointError(f"{path}: optimizer state is for {om and om['class']}, "
                                  f"the run uses {type(optimizer).__name__}")
        state = {}
        for i, keys in om["state_keys"].items():
            st = {}
            for k in keys:
                st[k] = torch.from_numpy(arrays[f"opt.{i}.{k}"].copy()) if f"opt.{i}.{k}" in arrays \
                    else om["scalars"][i][k]
            state[int(i)] = st
        optimizer.load_state_dict({"state": state, "param_groups": om["param_groups"]})
    if rng and "rng.torch" in arrays:
        torch.set_rng_state(torch.from_numpy(arrays["rng.torch"].copy()))
