"""marginopt: find the trades that cut a crypto-derivatives book's exchange margin while net delta
and vega stay inside the desk's limits, and prove the saving by recomputing the margin."""

from .errors import (ExpiredInstrument, InputError, Infeasible, InvalidValue, MalformedInstrumentName,
                     MarginoptError, MissingMarketData, ModelError, OptimizationError, SolverFailed,
                     SpecError, Unbounded, UnknownInstrument, UnsupportedCurrency, UnsupportedInstrument,
                     VerificationFailed)
from .instruments import Instrument, Kind, Settlement, parse_instrument
from .margins import MarginModel, MarginResult, available_models, load_model, margin, model_names
from .market import MarketSnapshot, load_market
from .portfolio import Portfolio, load_portfolio
from .rebalance import Proposal, RebalanceSpec, Rebalancer, load_spec, optimize
from . import derive  # noqa: E402,F401  (Derive's margin component registers itself)
from . import live  # noqa: E402,F401  (fetch, reconcile, watch; ccxt is imported on first use)
# marginopt.explain stays the subpackage (its explain() function is marginopt.explain.explain)
from .explain import attribute, capacity, compare, liquidation, whatif  # noqa: E402
# marginopt.allocate is the subpackage and, called, the desk allocation: marginopt.allocate(...)
from . import allocate  # noqa: E402,F401
from .allocate import Allocation  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "ExpiredInstrument", "Infeasible", "InputError", "Instrument", "InvalidValue", "Kind",
    "MalformedInstrumentName", "MarginModel", "MarginResult", "MarginoptError", "MarketSnapshot",
    "MissingMarketData", "ModelError", "OptimizationError", "Portfolio", "Settlement",
    "SolverFailed", "SpecError", "Unbounded", "UnknownInstrument", "UnsupportedCurrency", "UnsupportedInstrument",
    "VerificationFailed",
    "available_models", "load_market", "load_model", "load_portfolio", "margin", "model_names",
    "parse_instrument", "Proposal", "RebalanceSpec", "Rebalancer", "load_spec", "optimize",
    "attribute", "capacity", "compare", "liquidation", "whatif",
    "allocate", "Allocation",
]
