"""CTR models: tensors in, logits out. Every module in this package registers its model."""
import importlib
import pkgutil

from psrec.models.base import CTRModel, ExtraEmbedding, FeatureSpec, ModelInput, NoParams
from psrec.models.registry import build_model, get_model_class, model_names, register

# Import every model module (and subpackage) so that each registers itself by name; a new
# model is one new file, with no list to keep in sync.
for _m in pkgutil.iter_modules(__path__):
    if _m.name not in ("base", "registry", "layers"):
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["CTRModel", "ExtraEmbedding", "FeatureSpec", "ModelInput", "NoParams", "build_model",
           "get_model_class", "model_names", "register"]
