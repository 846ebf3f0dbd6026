import numpy as np
import torch

from psrec.data.base import Batch, FieldSpec, Ragged, Schema
from psrec.embedding.layer import EmbeddingLayer, plan_tables
from psrec.embedding.store import EmbeddingStore
from psrec.models import FeatureSpec, build_model


class RecordingStore(EmbeddingStore):
    """Row of key k is k * (1, 2, ..., dim); records what was applied."""

    def __init__(self, dims):
        self.dims, self.applied = dims, {}

    def dim(self, t):
        return self.dims[t]

    def lookup(self, t, keys, train=True):
        return (keys[:, None] * np.arange(1, self.dims[t] + 1)[None, :]).astype(np.float32)

    def apply_gradients(self, t, keys, grads, counts, step):
        self.applied[t] = (keys.copy(), grads.copy(), counts.copy(), step)


def test_dedup_pooling_and_gradient_counts():
    schema = Schema((FieldSpec("a", 10), FieldSpec("tags", 10, multi_valued=True), FieldSpec("b", 10)), ("d",))
    batch = Batch(
        keys=np.array([[1, 3], [1, 4]], dtype=np.int64),  # fields a and b
        dense=np.zeros((2, 1), np.float32), labels=np.array([0.0, 1.0], np.float32),
        multi=[Ragged(np.array([5, 5, 1], np.int64), np.array([0, 2, 3], np.int64))])
    spec = FeatureSpec(3, (2, 2, 2), 1)
    model = build_model("fm", spec)
    tables = plan_tables(schema, model, spec.embed_dims)
    assert [t.name for t in tables] == ["emb", "linear"]
    store = RecordingStore({"emb": 2, "linear": 1})
    layer = EmbeddingLayer(schema, tables)
    x, res = layer.lookup(store, batch, train=True)
    np.testing.assert_array_equal(res.keys["emb"], [1, 3, 4, 5])
    np.testing.assert_array_equal(res.counts["emb"], [3, 1, 1, 2])  # key 1 in a twice and in tags once
    torch.testing.assert_close(x.fields[1], torch.tensor([[10.0, 20.0], [1.0, 2.0]]))  # sum pooling
    torch.testing.assert_close(x.fields[2], torch.tensor([[3.0, 6.0], [4.0, 8.0]]))
    torch.testing.assert_close(x.linear, torch.tensor([[1.0, 10.0, 3.0], [1.0, 1.0, 4.0]]))
    # d(sum of all field embeddings)/d(row) = occurrences of the row's key
    torch.stack(x.fields).sum().backward()
    torch.testing.assert_close(res.rows["emb"].grad[:, 0], torch.tensor([3.0, 1.0, 1.0, 2.0]))


def test_eval_lookup_has_no_grad():
    schema = Schema((FieldSpec("a", 10),), ())
    batch = Batch(keys=np.array([[2]], np.int64), dense=np.zeros((1, 0), np.float32),
                  labels=np.zeros(1, np.float32))
    model = build_model("dnn", FeatureSpec(1, (2,), 0), {"hidden": (4,)})
    layer = EmbeddingLayer(schema, plan_tables(schema, model, (2,)))
    x, res = layer.lookup(RecordingStore({"emb": 2}), batch, train=False)
    assert not res.rows["emb"].requires_grad
    assert x.emb.shape == (1, 1, 2)
