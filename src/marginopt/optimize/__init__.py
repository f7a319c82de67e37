"""The rebalancer: spec, problem builder, solver boundary and proposals."""

from ._optimize import Rebalancer, optimize
from ._proposal import LimitCheck, Proposal, Trade
from ._solvers import CHAINS, ProblemClass, Verdict, verdict
from ._spec import Costs, Lots, RebalanceSpec, TradeBounds, UnderlyingLimits, load_spec

__all__ = ["CHAINS", "Costs", "LimitCheck", "Lots", "ProblemClass", "Proposal", "RebalanceSpec",
           "Rebalancer", "Trade", "TradeBounds", "UnderlyingLimits", "Verdict", "load_spec",
           "optimize", "verdict"]
