"""The raw-batch path through the embedding layer and the training step (local tables take a
batch's key draws as they are, `psrec.ev.raw`) against the distinct-key path the PS and
collective stores take: same losses, same predictions and the same tables after training,
bit for bit."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from psrec.config import load_config
from psrec.core.local import build_local
from psrec.data.base import Batch, FieldSpec, Ragged, Schema
from psrec.embedding.layer import EmbeddingLayer, plan_tables
from psrec.embedding.local import LocalStore
from psrec.ev import EVConfig, FilterConfig
from psrec.models import FeatureSpec, build_model


def _same_tables(a: LocalStore, b: LocalStore) -> None:
    assert a.table_names == b.table_names
    for t in a.table_names:
        sa, sb = a.variable(t).snapshot(), b.variable(t).snapshot()
        np.testing.assert_array_equal(sa.keys, sb.keys)
        np.testing.assert_array_equal(sa.values, sb.values)
        np.testing.assert_array_equal(sa.freqs, sb.freqs)
        np.testing.assert_array_equal(sa.versions, sb.versions)
        for k in sa.slots:
            np.testing.assert_array_equal(sa.slots[k], sb.slots[k])


@pytest.mark.parametrize("overrides", [[], ["embedding.filter.kind=counter", "embedding.filter.min_freq=2"],
                                       ["model.name=lr"]], ids=["deepfm", "deepfm+filter", "lr"])
def test_raw_step_trains_exactly_as_the_distinct_key_step(overrides):
    base = ["synthetic.num_fields=8", "synthetic.num_dense=3", "data.batch_size=256"]
    raw, ref = (build_local(load_config(None, base + overrides)) for _ in range(2))
    assert raw.store.raw_batches and raw.step.raw
    ref.step.raw = False  # the PS and collective stores' path, on the same local tables
    for step in range(1, 9):
        start = (step - 1) * 256
        la, ra = raw.step.train_rows(raw.source, start, start + 256, step)
        lb, rb = ref.step.train_rows(ref.source, start, start + 256, step)
        assert la == lb
        # the raw path's dedup is the store's lookup; the distinct path books it as compute
        assert ra.seconds["lookup"] > 0 and rb.seconds["lookup"] > 0
    _same_tables(raw.store, ref.store)
    for pa, pb in zip(raw.model.parameters(), ref.model.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    batch = raw.source.read(4096, 4096 + 512)
    np.testing.assert_array_equal(raw.step.predict(batch), ref.step.predict(batch))


def test_raw_layer_pools_multi_valued_fields_and_shares_one_dedup():
    """A multi-valued field and a linear table over the same fields: the raw lookup gives each
    draw its row, the tables share one de-duplication, and the update equals the distinct path's."""
    schema = Schema((FieldSpec("a", 10), FieldSpec("tags", 10, multi_valued=True), FieldSpec("b", 10)), ("d",))
    batch = Batch(keys=np.array([[1, 3], [1, 4], [7, 3]], dtype=np.int64),
                  dense=np.zeros((3, 1), np.float32), labels=np.array([0.0, 1.0, 1.0], np.float32),
                  multi=[Ragged(np.array([5, 5, 1, 9], np.int64), np.array([0, 2, 3, 4], np.int64))])
    spec = FeatureSpec(3, (2, 2, 2), 1)
    tables = plan_tables(schema, build_model("fm", spec), spec.embed_dims)
    layer = EmbeddingLayer(schema, tables)
    stores = [LocalStore({t.name: EVConfig(dim=t.dim, seed=3) for t in tables}) for _ in range(2)]
    keys = layer.raw_keys(batch)
    assert keys["emb"] is keys["linear"]  # one array: the store de-duplicates it once
    outs = []
    for store, raw in zip(stores, (True, False)):
        store.raw_batches = raw  # an instance attribute: this store takes distinct keys
        x, res = layer.lookup(store, batch, train=True)
        assert (res.handles is not None) == raw
        if raw:
            assert res.handles["emb"].inverse is res.handles["linear"].inverse
            assert res.rows["emb"].shape == (len(keys["emb"]), 2)
        loss = sum((f * torch.arange(1.0, 3.0)).sum() for f in x.fields) + (x.linear ** 2).sum()
        loss.backward()
        res.push(store, step=1)
        outs.append([f.detach().numpy() for f in x.fields])
    for fa, fb in zip(*outs):
        np.testing.assert_array_equal(fa, fb)
    _same_tables(*stores)
    np.testing.assert_array_equal(stores[0].variable("emb").metadata(np.array([1, 5, 9], np.int64))[0], [3, 2, 1])


def test_raw_lookup_reuses_another_variables_dedup():
    store = LocalStore({"e": EVConfig(dim=4, seed=1), "l": EVConfig(dim=1, seed=2),
                        "f": EVConfig(dim=4, seed=1, filter=FilterConfig(kind="counter", min_freq=2))})
    draws = np.array([5, 9, 5, 5, 2], np.int64)
    store.apply_gradients("e", np.array([9], np.int64), np.ones((1, 4), np.float32), np.array([1]), step=1)
    out, handles = store.lookup_raw_many({"e": draws, "l": draws, "f": draws.copy()})
    assert handles["l"].keys is handles["e"].keys and handles["f"].keys is not handles["e"].keys
    for t in ("e", "l"):
        np.testing.assert_array_equal(out[t], store.lookup(t, draws, train=False))
    np.testing.assert_array_equal(out["f"], np.zeros((5, 4), np.float32))  # held back by the filter
    with pytest.raises(ValueError, match="5 draws for 3 keys"):
        store.variable("l").lookup_raw(draws[:3], like=handles["e"])
