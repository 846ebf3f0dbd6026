"""Each sparse optimizer against a dense reference on the rows it touched:
torch.optim for SGD, Adagrad and Adam; the closed forms for FTRL and G-FTRL."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from psrec.ev import EmbeddingVariable, EVConfig, InitializerConfig, OptimizerConfig

D = 6
KEYS = np.array([-5, 3, 11, 1 << 40, 77, 9], dtype=np.int64)  # 6 keys, arbitrary values
STEPS = 8


def _grads(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((len(KEYS), D)).astype(np.float32) for _ in range(STEPS)]


def _touched(step: int) -> np.ndarray:
    """Rows touched at `step`: rows 0-1 every step, the others on alternate steps."""
    mask = np.ones(len(KEYS), dtype=bool)
    mask[2 + step % 2::2] = False
    return mask


def _run_ev(opt: OptimizerConfig, init: str = "truncated_normal") -> tuple[np.ndarray, np.ndarray]:
    ev = EmbeddingVariable(EVConfig(dim=D, optimizer=opt, initializer=InitializerConfig(kind=init)))
    start = ev.lookup(KEYS)
    for step, g in enumerate(_grads(), start=1):
        m = _touched(step)
        ev.apply_gradients(KEYS[m], g[m], step=step)
    return start, ev.lookup(KEYS)


def _run_torch(make, start: np.ndarray) -> np.ndarray:
    p = torch.nn.Parameter(torch.from_numpy(start.copy()))
    opt = make([p])
    for step, g in enumerate(_grads(), start=1):
        full = np.where(_touched(step)[:, None], g, 0.0).astype(np.float32)
        p.grad = torch.from_numpy(full)
        opt.step()
    return p.detach().numpy()


def test_sgd_matches_torch():
    cfg = OptimizerConfig(name="sgd", lr=0.3)
    start, got = _run_ev(cfg)
    want = _run_torch(lambda ps: torch.optim.SGD(ps, lr=0.3), start)
    torch.testing.assert_close(torch.from_numpy(got), torch.from_numpy(want), rtol=1e-6, atol=1e-6)


def test_adagrad_matches_torch():
    cfg = OptimizerConfig(name="adagrad", lr=0.2, initial_accumulator=0.1, eps=1e-10)
    start, got = _run_ev(cfg)
    # An untouched row has zero gradient, which leaves dense Adagrad's row unchanged too,
    # so every row can be compared.
    want = _run_torch(lambda ps: torch.optim.Adagrad(ps, lr=0.2, initial_accumulator_value=0.1, eps=1e-10), start)
    torch.testing.assert_close(torch.from_numpy(got), torch.from_numpy(want), rtol=1e-5, atol=1e-6)


def _run_sparse_torch(make, start: np.ndarray) -> np.ndarray:
    """`_run_torch` with the gradients as torch would see them from a sparse embedding: only
    the touched rows, as a sparse COO tensor."""
    p = torch.nn.Parameter(torch.from_numpy(start.copy()))
    opt = make([p])
    for step, g in enumerate(_grads(), start=1):
        idx = np.flatnonzero(_touched(step))
        p.grad = torch.sparse_coo_tensor(torch.from_numpy(idx)[None], torch.from_numpy(g[idx]), p.shape,
                                         check_invariants=True)
        opt.step()
    return p.detach().numpy()


def test_adam_is_torch_sparse_adam():
    """The default sparse Adam corrects by the global step, as torch.optim.SparseAdam (and TF's
    LazyAdam): every row, the ones touched on alternate steps included, matches it."""
    cfg = OptimizerConfig(name="adam", lr=0.05, beta1=0.8, beta2=0.99, eps=1e-7)
    start, got = _run_ev(cfg)
    want = _run_sparse_torch(lambda ps: torch.optim.SparseAdam(ps, lr=0.05, betas=(0.8, 0.99), eps=1e-7), start)
    assert not np.allclose(got, start)
    torch.testing.assert_close(torch.from_numpy(got), torch.from_numpy(want), rtol=1e-6, atol=1e-7)
    # ... and the per-row correction (adam_async) is a different optimizer on those rows
    _, per_row = _run_ev(OptimizerConfig(name="adam_async", lr=0.05, beta1=0.8, beta2=0.99, eps=1e-7))
    assert not np.allclose(per_row[2:], want[2:])


def test_adam_defaults_are_torch_defaults():
    """eps defaults per optimizer to torch's (Adagrad 1e-10, Adam / SparseAdam 1e-8); betas too."""
    sparse_adam = torch.optim.SparseAdam([torch.nn.Parameter(torch.zeros(1))]).defaults
    for name in ("adam", "adam_async"):
        cfg = OptimizerConfig(name=name)
        assert (cfg.eps, (cfg.beta1, cfg.beta2)) == (sparse_adam["eps"], sparse_adam["betas"])
    torch_adagrad = torch.optim.Adagrad([torch.nn.Parameter(torch.zeros(1))])
    assert OptimizerConfig(name="adagrad").eps == torch_adagrad.defaults["eps"]
    assert OptimizerConfig(name="adam", eps=1e-7).eps == 1e-7


def test_adam_step_zero_counts_as_the_first_step():
    a, b = (EmbeddingVariable(EVConfig(dim=2, optimizer=OptimizerConfig(name="adam"))) for _ in range(2))
    g = np.ones((2, 2), np.float32)
    a.apply_gradients(KEYS[:2], g, step=0)
    b.apply_gradients(KEYS[:2], g, step=1)
    np.testing.assert_array_equal(a.lookup(KEYS[:2]), b.lookup(KEYS[:2]))
    assert np.isfinite(a.lookup(KEYS[:2])).all()


def test_adam_async_matches_torch_adam_on_rows_touched_every_step():
    cfg = OptimizerConfig(name="adam_async", lr=0.05, beta1=0.8, beta2=0.99, eps=1e-7)
    start, got = _run_ev(cfg)
    want = _run_torch(lambda ps: torch.optim.Adam(ps, lr=0.05, betas=(0.8, 0.99), eps=1e-7), start)
    every = np.ones(len(KEYS), dtype=bool)
    for step in range(1, STEPS + 1):
        every &= _touched(step)
    assert every.sum() == 2
    torch.testing.assert_close(torch.from_numpy(got[every]), torch.from_numpy(want[every]), rtol=1e-5, atol=1e-6)
    # Rows touched on alternate steps differ from dense Adam (lazy), and stay finite.
    assert np.isfinite(got).all() and not np.allclose(got[~every], want[~every])


def test_adam_async_counts_steps_per_row():
    ev = EmbeddingVariable(EVConfig(dim=2, optimizer=OptimizerConfig(name="adam_async")))
    ev.apply_gradients(KEYS[:2], np.ones((2, 2), np.float32), step=1)
    ev.apply_gradients(KEYS[:1], np.ones((1, 2), np.float32), step=2)
    assert ev.slot("step", KEYS[:2]).tolist() == [2, 1]


def _ftrl_reference(w0, grads_seq, masks, alpha, beta, l1, l2, n0, group):
    """McMahan et al. 2013 Algorithm 1 (group=False) / the G-FTRL closed form (group=True),
    in float64, from z chosen so that the closed form gives w0."""
    w = w0.astype(np.float64).copy()
    n = np.full_like(w, n0)
    d = w.shape[1]
    denom = (beta + np.sqrt(n)) / alpha + l2
    if group:
        norm = np.linalg.norm(w, axis=1, keepdims=True)
        z = -(w * denom + l1 * math.sqrt(d) * np.divide(w, norm, out=np.zeros_like(w), where=norm > 0))
    else:
        z = -(w * denom + np.sign(w) * l1)
    for g, m in zip(grads_seq, masks):
        g = g.astype(np.float64)
        for i in np.flatnonzero(m):
            sigma = (np.sqrt(n[i] + g[i] ** 2) - np.sqrt(n[i])) / alpha
            z[i] += g[i] - sigma * w[i]
            n[i] += g[i] ** 2
            den = (beta + np.sqrt(n[i])) / alpha + l2
            if group:
                zn = np.linalg.norm(z[i])
                w[i] = 0.0 if zn <= l1 * math.sqrt(d) else z[i] * (l1 * math.sqrt(d) / zn - 1) / den
            else:
                w[i] = np.where(np.abs(z[i]) <= l1, 0.0, -(z[i] - np.sign(z[i]) * l1) / den)
    return w


@pytest.mark.parametrize("init", ["zeros", "truncated_normal"])
@pytest.mark.parametrize("name,l1", [("ftrl", 0.0), ("ftrl", 0.5), ("gftrl", 0.0), ("gftrl", 2.5)])
def test_ftrl_family_matches_closed_form(name, l1, init):
    cfg = OptimizerConfig(name=name, lr=0.1, ftrl_beta=1.0, l1=l1, l2=0.01, initial_accumulator=0.1)
    start, got = _run_ev(cfg, init=init)
    masks = [_touched(s) for s in range(1, STEPS + 1)]
    want = _ftrl_reference(start, _grads(), masks, alpha=0.1, beta=1.0, l1=l1, l2=0.01, n0=0.1,
                           group=name == "gftrl")
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
    if name == "gftrl" and l1 > 0 and init == "zeros":
        zero_rows = ~got.any(axis=1)
        assert 0 < zero_rows.sum() < len(KEYS)  # both branches of the group threshold are exercised


def test_gftrl_zeroes_whole_rows_and_they_become_eviction_candidates():
    cfg = EVConfig(dim=D, l2_evict_threshold=1e-12, initializer=InitializerConfig(kind="zeros"),
                   optimizer=OptimizerConfig(name="gftrl", lr=0.1, l1=1.0))
    ev = EmbeddingVariable(cfg, name="gl")
    rng = np.random.default_rng(3)
    scale = np.array([0.01, 0.01, 0.01, 5.0, 5.0, 5.0], np.float32)[:, None]  # weak and strong ids
    for step in range(1, 6):
        ev.apply_gradients(KEYS, rng.standard_normal((6, D)).astype(np.float32) * scale, step=step)
    v = ev.lookup(KEYS)
    zero_rows = ~v.any(axis=1)
    assert zero_rows[:3].all() and (v[3:] != 0).all()  # all-or-nothing per row
    rep = ev.evict()
    assert rep.rows_l2 == 3 and ev.contains(KEYS).tolist() == [False] * 3 + [True] * 3


@pytest.mark.parametrize("name", ["ftrl", "gftrl"])
def test_ftrl_keeps_the_initial_row_until_gradients_move_it(name):
    ev = EmbeddingVariable(EVConfig(dim=D, optimizer=OptimizerConfig(name=name, l1=0.01)))
    start = ev.lookup(KEYS)
    ev.apply_gradients(KEYS, np.zeros((6, D), np.float32), step=1)
    np.testing.assert_allclose(ev.lookup(KEYS), start, rtol=1e-5, atol=1e-7)
