"""The margin-component interface and its registry.

A component *spec* (pydantic, from the model YAML) is bound to a margin pool (its instruments and
the market) to give a ``BoundComponent``. The bound component exposes its market-dependent data as
named arrays (``values``); the calculator evaluates the rule on them in numpy and the optimizer
turns the same arrays into cvxpy Parameters, so a new snapshot only updates Parameter values.
Every rule is positively homogeneous in its arrays, so scaling them by the pool's USD rate gives
the margin in USD (that is how the optimizer sums pools without breaking DPP).

A new component is one module: a ``BoundComponent`` (the rule, with the cone its cvxpy term lives
in) and a ``ComponentSpec`` subclass (its YAML keys) decorated with ``@register``. A model file
names it by its ``type``; this module imports no component, so a component module may live in any
package (Derive's is ``marginopt.derive._component``) without an import cycle.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar, get_args

import cvxpy as cp
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, SerializeAsAny, field_validator

from ..instruments import Instrument, Settlement
from ..market import MarketSnapshot, PricingInputs

#: The cone a convex component's cvxpy term lives in: ``linear`` (LP-representable: sums,
#: maxima, absolute values of affine expressions), ``quadratic`` (a convex quadratic: QP) or
#: ``soc`` (a second-order cone: SOCP). The optimizer picks its solver chain from these.
Cone = Literal["linear", "quadratic", "soc"]
CONES: tuple[Cone, ...] = get_args(Cone)


T = TypeVar("T")


# --------------------------------------------------------------------------- binding context
@dataclass(frozen=True)
class PoolContext:
    """What a component needs to bind: the pool's instruments and the market."""

    pool: str
    underlying: str
    settlement: Settlement | None  # None for a single USD pool spanning every underlying
    instruments: tuple[Instrument, ...]
    inputs: PricingInputs
    market: MarketSnapshot
    model_dir: Path | None = None
    #: what components derive from the pool's instruments alone (expiry groups, masks), kept
    #: with the model's layout of this instrument list: a new snapshot re-binds only numbers
    structure: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def memo(self, key: str, build: Callable[[], T]) -> T:
        """``build()``, computed once per instrument list (it must read the instruments only,
        never the market)."""
        if key not in self.structure:
            self.structure[key] = build()
        return self.structure[key]

    @property
    def currency(self) -> str:
        return self.underlying if self.settlement is Settlement.INVERSE else "USD"

    @property
    def usd_rate(self) -> float:
        """USD per unit of the pool's margin currency."""
        return float(self.market.index_prices[self.underlying]) if self.settlement is Settlement.INVERSE else 1.0

    @property
    def settlement_key(self) -> str:
        return "inverse" if self.settlement is Settlement.INVERSE else "linear"


# --------------------------------------------------------------------------- bound components
@dataclass(frozen=True)
class Term:
    """A component's cvxpy form: the expression plus any constraints that define it."""

    expression: cp.Expression
    constraints: list[cp.Constraint] = field(default_factory=list)


#: A sparse matrix as coordinate triples ``(rows, columns, values)``.
Coo = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class LinearRows:
    """A linear term as rows of a linear program, over the pool positions ``x`` and the term's
    own columns ``a`` (epigraph and split variables):

        row_lower <= X x + A a <= row_upper,    col_lower <= a <= col_upper,

    with the term's value at ``x`` equal to ``min cost @ a`` over those ``a`` (``cost >= 0``).
    ``x_matrix`` is dense (its rows are the first rows of the block, the others do not involve
    ``x``) or coordinates; ``a_matrix`` is coordinates. Everything but the pattern is a number of
    the component's ``values``: a new snapshot of the same structure changes numbers only.
    ``pattern`` is what, besides the shapes, fixes where the nonzeros are."""

    x_matrix: np.ndarray | Coo
    a_matrix: Coo
    row_lower: np.ndarray
    row_upper: np.ndarray
    col_lower: np.ndarray
    col_upper: np.ndarray
    cost: np.ndarray
    pattern: tuple = ()

    @property
    def n_rows(self) -> int:
        return int(self.row_lower.size)

    @property
    def n_cols(self) -> int:
        return int(self.cost.size)

    def x_coo(self, n_pool: int) -> Coo:
        """``X`` as coordinates over the pool positions (dense blocks: every entry, zeros too, so
        the pattern stays the same from one snapshot to the next)."""
        if isinstance(self.x_matrix, tuple):
            return self.x_matrix
        k = self.x_matrix.shape[0]
        return (np.repeat(np.arange(k), n_pool), np.tile(np.arange(n_pool), k), self.x_matrix.ravel())

    def x_times(self, x: np.ndarray) -> np.ndarray:
        """``X x`` (one value per row of the block)."""
        out = np.zeros(self.n_rows)
        if isinstance(self.x_matrix, tuple):
            r, c, v = self.x_matrix
            out += np.bincount(r, v * x[c], minlength=self.n_rows)
        else:
            out[: self.x_matrix.shape[0]] = self.x_matrix @ x
        return out


class BoundComponent(ABC):
    """A rule bound to one pool; ``values`` are its market-dependent arrays.

    Each subclass declares what its cvxpy term is: ``convex`` (False: the optimizer linearises it
    instead, see ``linearize``) and ``cone`` (the widest cone its term can need; a component
    whose form depends on its data narrows it per instance in ``term_cone``)."""

    name: str
    convex: ClassVar[bool] = True
    #: the cone of the cvxpy term (declared by every subclass; non-convex ones are linearised)
    cone: ClassVar[Cone]
    #: value names that can be negative (all others become nonneg Parameters)
    signed_values: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cone = getattr(cls, "cone", None)
        if cone not in CONES:
            # a term that does not say what it is would be routed to the wrong solver
            raise TypeError(f"{cls.__name__} must declare its term's cone as one of {CONES}, "
                            f"got {cone!r}")

    def term_cone(self) -> Cone:
        """The cone this bound instance's term lives in (``cone`` unless the data narrows it)."""
        return self.cone

    @abstractmethod
    def values(self, scale: float = 1.0) -> dict[str, np.ndarray]:
        """Arrays the rule is made of, scaled so the rule's value scales by ``scale``."""

    @abstractmethod
    def evaluate(self, x: np.ndarray, values: dict[str, np.ndarray] | None = None) -> float:
        """The rule's value at pool positions ``x`` (numpy)."""

    @abstractmethod
    def term(self, x: cp.Expression, params: dict[str, cp.Parameter]) -> Term:
        """The same rule as a cvxpy expression of pool positions ``x`` (convex components only)."""

    def details(self, x: np.ndarray) -> dict[str, Any]:
        """Extra facts for reports (worst scenario, scenario P&L); empty by default."""
        return {}

    def structure_key(self) -> tuple:
        """What, besides the shapes of ``values``, changes this component's cvxpy form: a
        compiled problem is re-used only while every component's key stays the same."""
        return ()

    def linear_rows(self, values: dict[str, np.ndarray]) -> LinearRows | None:
        """The term as rows of a linear program built from ``values`` (the arrays ``evaluate``
        uses), for the optimizer's native LP path; ``None`` (the default) when the term has no
        such form, and the cvxpy problem is used instead."""
        return None

    def linearize(self, x: np.ndarray, values: dict[str, np.ndarray] | None = None
                  ) -> tuple[float, np.ndarray]:
        """Value and a (super)gradient at ``x``: non-convex components override it so the
        optimizer can run sequential convex programming."""
        raise TypeError(f"{type(self).__name__} is convex; it is compiled, not linearised")

    def convex_model(self, x: np.ndarray, values: dict[str, np.ndarray] | None,
                     pieces: int | None) -> dict[str, Any] | None:
        """A non-convex component's convex model around pool positions ``x``, exact at ``x``,
        as the arrays of ``marginopt.rebalance._scp.ComponentModel`` (``pieces``: scenario rows
        kept, None for all); None: sequential convex programming uses its tangent
        (``linearize``)."""
        return None


# --------------------------------------------------------------------------- specs (YAML)
class ComponentSpec(BaseModel):
    """Base of every component's YAML keys. A subclass sets ``type: Literal["its_name"]`` and
    ``implementation`` (its ``BoundComponent``), implements ``bind`` and is made known to model
    files with ``@register``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    name: str
    #: declared in the model file; checked against the implementation at load time
    convex: bool = True
    inferred: bool = Field(False, description="the rule is a best reading of an incomplete source")

    implementation: ClassVar[type[BoundComponent]]

    @field_validator("convex")
    @classmethod
    def _declared_convexity(cls, v: bool) -> bool:
        if v != cls.implementation.convex:
            raise ValueError(f"{cls.__name__} is {'convex' if cls.implementation.convex else 'not convex'}")
        return v

    @abstractmethod
    def bind(self, ctx: PoolContext) -> BoundComponent:
        """The rule bound to one pool's instruments and the market."""


# --------------------------------------------------------------------------- the registry
_REGISTRY: dict[str, type[ComponentSpec]] = {}

S = TypeVar("S", bound=type[ComponentSpec])


def _type_name(spec: type[ComponentSpec]) -> str:
    info = spec.model_fields.get("type")
    names = get_args(info.annotation) if info is not None else ()
    if len(names) != 1 or not isinstance(names[0], str):
        raise TypeError(f"{spec.__name__} must declare its model-file name as "
                        "type: Literal['its_name']")
    return names[0]


def register(spec: S) -> S:
    """Class decorator: model files may now use ``type: <spec's name>``. Registering another
    class under a name already taken is an error (re-registering the same class is not)."""
    if not (isinstance(spec, type) and issubclass(spec, ComponentSpec)):
        raise TypeError(f"register takes a ComponentSpec subclass, got {spec!r}")
    if not (isinstance(getattr(spec, "implementation", None), type)
            and issubclass(spec.implementation, BoundComponent)):
        raise TypeError(f"{spec.__name__} must name its BoundComponent as ``implementation``")
    name = _type_name(spec)
    known = _REGISTRY.get(name)
    if known is not None and (known.__module__, known.__qualname__) != (spec.__module__, spec.__qualname__):
        raise ValueError(f"component type '{name}' is already registered by "
                         f"{known.__module__}.{known.__qualname__}")
    _REGISTRY[name] = spec
    return spec


def unregister(name: str) -> None:
    """Forget a component type (tests that register a toy component clean up with it)."""
    _REGISTRY.pop(name, None)


def registered_components() -> dict[str, type[ComponentSpec]]:
    """Every component type a model file can name, by its ``type``."""
    return dict(sorted(_REGISTRY.items()))


def _validate_component(value: Any) -> ComponentSpec:
    """A model file's component entry, validated by the spec its ``type`` names."""
    if isinstance(value, ComponentSpec):
        return value
    if not isinstance(value, Mapping):
        raise ValueError("a component is a mapping with a 'type' key")
    kind = value.get("type")
    spec = _REGISTRY.get(kind) if isinstance(kind, str) else None
    if spec is None:
        raise ValueError(f"unknown component type {kind!r} (registered: {', '.join(sorted(_REGISTRY))}); "
                         "a component module registers its type when imported")
    return spec.model_validate(value)


#: A component entry of a model file: validated by whichever registered spec its ``type`` names
#: (a discriminated union over the registry as it is when the model is validated), and dumped
#: with every key of that spec.
AnyComponentSpec = Annotated[ComponentSpec, SerializeAsAny(), PlainValidator(_validate_component)]

__all__ = ["AnyComponentSpec", "BoundComponent", "CONES", "ComponentSpec", "Cone", "Coo", "LinearRows",
           "PoolContext", "Term", "register", "registered_components", "unregister"]
