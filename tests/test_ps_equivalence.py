"""Oracle: sync PS training with plain SGD equals local training on the union of the
workers' batches (N workers x batch b == one local step of batch N*b), after K steps."""
import numpy as np
import pytest
import torch

from psrec.config import load_config
from psrec.core.flat import flat_params
from psrec.core.local import build_local, train_range
from psrec.core.progress import progress_bar
from psrec.ps.runner import InProcessPSJob, plan_ps

K, B = 5, 64
BASE = ["synthetic.num_fields=6", "synthetic.num_dense=2", "embedding.dim=4", "model.name=deepfm",
        "model.params.hidden=[8]", "embedding.optimizer.name=sgd", "embedding.optimizer.lr=0.5",
        "embedding.initializer.scale=0.1", "train.optimizer=sgd", "train.lr=0.1", "train.progress=false",
        "data.eval_rows=100"]


def local_params(workers: int):
    cfg = load_config(None, BASE + [f"data.batch_size={B * workers}", f"data.train_rows={K * B * workers}"])
    setup = build_local(cfg)
    train_range(setup.step, setup.source, 0, K * B * workers, B * workers)
    rows = {}
    for t in setup.store.table_names:
        snap = setup.store.variable(t).snapshot()
        rows[t] = dict(zip(snap.keys.tolist(), snap.values))
    return rows, flat_params(setup.model), setup.store


@pytest.mark.parametrize("workers, num_ps, dense",
                         [(1, 1, "ps"), (2, 3, "ps"), (3, 2, "ps"), (3, 2, "allreduce"), (2, 1, "allreduce")])
def test_sync_ps_matches_local(workers, num_ps, dense):
    want_rows, want_dense, store = local_params(workers)
    cfg = load_config(None, BASE + [f"data.batch_size={B}", f"data.train_rows={K * B * workers}",
                                    "ps.transport=inprocess", "ps.sync=true", f"ps.workers={workers}",
                                    f"ps.num_ps={num_ps}", f"ps.dense={dense}"])
    plan = plan_ps(cfg)
    assert plan.rounds == K
    job = InProcessPSJob(plan, plan.source.build())
    with progress_bar(0, False) as bar:
        job.train(bar, None)
    transport, wks = job.transport, job.workers
    for t, want in want_rows.items():
        got = {}
        for e in transport.endpoints:
            keys, values = e.table_values(t)
            got.update(zip(keys.tolist(), values))
        assert set(got) == set(want), t
        keys = sorted(want)
        torch.testing.assert_close(torch.from_numpy(np.stack([got[k] for k in keys])),
                                   torch.from_numpy(np.stack([want[k] for k in keys])), rtol=1e-5, atol=1e-6)
        # freq/version metadata match too: one global step counter across shards
        fw, vw = store.variable(t).metadata(np.array(keys))
        fg = np.zeros(len(keys), np.int64)
        vg = np.zeros(len(keys), np.int64)
        for e in transport.endpoints:
            f, v = e.shard.store.variable(t).metadata(np.array(keys))
            own = e.shard.store.variable(t).contains(np.array(keys))
            fg[own], vg[own] = f[own], v[own]
        np.testing.assert_array_equal(fg, fw)
        np.testing.assert_array_equal(vg, vw)
    if dense == "ps":
        got_dense = np.concatenate([e.pull({}, False, True)[1] for e in transport.endpoints])
    else:
        got_dense = flat_params(wks[0].model)
        for w in wks[1:]:  # replicas stay identical
            np.testing.assert_array_equal(flat_params(w.model), got_dense)
    torch.testing.assert_close(torch.from_numpy(got_dense), torch.from_numpy(want_dense), rtol=1e-5, atol=1e-6)
