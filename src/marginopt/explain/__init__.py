"""Explain a book's margin: what drives it (attribution by position, pool and component), what a
trade or a parameter change would do (what-if), how much room is left (capacity per instrument),
how far the market can move before liquidation, and the same book under every model (compare).

Every function takes a book, a market snapshot and a model as the rest of marginopt does, and
returns a frozen result with ``to_frame()`` and ``to_dict()``."""

from ._attribution import Attribution, ComponentAttribution, PositionAttribution, attribute
from ._capacity import Capacity, capacity
from ._compare import Comparison, ModelMargin, compare
from ._explain import Explanation, explain
from ._liquidation import Liquidation, LiquidationPoint, liquidation
from ._whatif import WhatIf, set_parameters, whatif

__all__ = ["Attribution", "Capacity", "Comparison", "ComponentAttribution", "Explanation",
           "Liquidation", "LiquidationPoint", "ModelMargin", "PositionAttribution", "WhatIf",
           "attribute", "capacity", "compare", "explain", "liquidation", "set_parameters", "whatif"]
