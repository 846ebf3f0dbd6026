"""Criteo, Avazu and MovieLens as shipped presets of the spec-driven reader: each one's
columns, label and `[[data.features]]` (defined beside its reader class)."""
from __future__ import annotations

from typing import Any

from psrec.data.avazu import AVAZU_COLUMNS, AVAZU_FEATURES
from psrec.data.criteo import CRITEO_COLUMNS, CRITEO_FEATURES
from psrec.data.movielens import LIKE_THRESHOLD, MOVIELENS_COLUMNS, MOVIELENS_FEATURES

__all__ = ["PRESETS", "preset_options"]

# name -> (file columns, label column, features, label threshold: 0 = a 0/1 label)
PRESETS = {
    "criteo": (CRITEO_COLUMNS, "label", CRITEO_FEATURES, 0.0),
    "avazu": (AVAZU_COLUMNS, "click", AVAZU_FEATURES, 0.0),
    "movielens": (MOVIELENS_COLUMNS, "rating", MOVIELENS_FEATURES, LIKE_THRESHOLD),
}


def preset_options(name: str) -> dict[str, Any]:
    """`FeatureCsvSource` keyword arguments of a preset (a header line is detected)."""
    columns, label, features, threshold = PRESETS[name]
    return {"columns": columns, "label": label, "features": features, "label_threshold": threshold}
