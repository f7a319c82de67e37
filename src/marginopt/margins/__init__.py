"""Margin models: the component interface and registry, the built-in components, rule sets as
data, and the calculator."""

from ._base import (AnyComponentSpec, BoundComponent, ComponentSpec, Cone, LinearRows, PoolContext, Term,
                    register, registered_components, unregister)
from . import _components  # noqa: F401  (the built-in components register themselves)
from ._calculator import margin
from ._model import (BoundModel, BoundPool, MarginModel, MarginResult, PoolMargin,
                     available_models, load_model, model_names)

__all__ = [
    "AnyComponentSpec", "BoundComponent", "BoundModel", "BoundPool", "ComponentSpec", "Cone", "LinearRows",
    "MarginModel", "MarginResult", "PoolContext", "PoolMargin", "Term", "available_models",
    "load_model", "margin", "model_names", "register", "registered_components", "unregister",
]
