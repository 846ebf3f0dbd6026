"""A generated CSV with a planted logistic signal, for the spec-reader tests: the planted
model's AUC on the test rows is the best any model can reach there."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from psrec.metrics.auc import auc

FEATURES = ('data.features=[{name="user", cardinality=50}, {name="item", cardinality=20}, '
            '{name="price", type="numeric"}, {name="tags", type="sequence"}]')


def planted_csv(path: Path, rows: int, seed: int = 0, test_share: float = 0.1) -> float:
    """Write `rows` rows (header clicked,user,item,price,tags); returns the planted AUC on the
    last `test_share` of them (the held-out test rows of a single train file)."""
    rng = np.random.default_rng(seed)
    user, item = rng.integers(0, 50, rows), rng.integers(0, 20, rows)
    tag = rng.integers(0, 8, (rows, 2))
    price = rng.normal(size=rows)
    w_user, w_item, w_tag = rng.normal(0, 1.0, 50), rng.normal(0, 1.0, 20), rng.normal(0, 0.5, 8)
    logit = w_user[user] + w_item[item] + w_tag[tag].sum(1) + 0.8 * price - 0.3
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    with open(path, "w") as f:
        f.write("clicked,user,item,price,tags\n")
        for i in range(rows):
            f.write(f"{y[i]},{user[i]},{item[i]},{price[i]:.6f},{tag[i, 0]}|{tag[i, 1]}\n")
    held = int(round(rows * test_share))
    return auc(y[-held:].astype(np.float32), logit[-held:])
