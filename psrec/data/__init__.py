"""Data sources: anything that serves row ranges `[start, end)` as batches (numpy only)."""
from psrec.data.base import Batch, DataSource, FieldSpec, Ragged, Schema, concat_batches
from psrec.data.keys import key_field, key_id, make_keys

__all__ = ["Batch", "DataSource", "FieldSpec", "Ragged", "Schema", "concat_batches",
           "key_field", "key_id", "make_keys"]
