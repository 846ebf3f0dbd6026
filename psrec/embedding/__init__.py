"""Embeddings between the data and the model.

    layer   `EmbeddingLayer`: a batch's keys -> deduplicated lookups -> per-field tensors, and
            gradients back to per-key sparse updates; `plan_tables` (which tables a model needs)
    store   `EmbeddingStore`, the seam to wherever rows live (local, PS, collective shards),
            with what the training step asks of a store's calls (seconds, traffic)
    local   `LocalStore`: embedding variables in this process; `table_seed`
"""
