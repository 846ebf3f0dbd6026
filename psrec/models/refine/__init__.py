"""Feature-refinement modules E (B, F, D) -> E' (B, F, D), found by name, and a wrapper that
puts any of them in front of any registered CTR model (`refine_model(model, "senet")`).

Importing this package imports every refiner module so each registers itself.
"""
from psrec.models.refine.base import (
    ContextMLPParams,
    Refiner,
    build_refiner,
    get_refiner_class,
    refiner_names,
    register_refiner,
)
from psrec.models.refine.fen import FEN
from psrec.models.refine.gates import FWN, BGate, VGate
from psrec.models.refine.gfrl import GFRL
from psrec.models.refine.ieu import IEU, FRNetB, FRNetV, IEUParams, cs_gate
from psrec.models.refine.senet import SENET, SENETParams
from psrec.models.refine.skip import Skip
from psrec.models.refine.wrapper import RefinedModel, refine_model, with_fields

__all__ = ["BGate", "ContextMLPParams", "FEN", "FRNetB", "FRNetV", "FWN", "GFRL", "IEU", "IEUParams",
           "RefinedModel", "Refiner", "SENET", "SENETParams", "Skip", "VGate", "build_refiner",
           "cs_gate", "get_refiner_class", "refine_model", "refiner_names", "register_refiner",
           "with_fields"]
