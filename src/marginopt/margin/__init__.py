"""Margin models: components, rule sets as data, and the calculator."""

from ._calculator import margin
from ._components import BoundComponent, ComponentSpec, PoolContext, Term
from ._model import (BoundModel, BoundPool, MarginModel, MarginResult, PoolMargin,
                     available_models, load_model, model_names)

__all__ = [
    "BoundComponent", "BoundModel", "BoundPool", "ComponentSpec", "MarginModel", "MarginResult",
    "PoolContext", "PoolMargin", "Term", "available_models", "load_model", "margin", "model_names",
]
