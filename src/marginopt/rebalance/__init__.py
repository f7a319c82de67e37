"""The rebalancer: spec, problem builder, solver boundary and proposals."""

from ._optimize import Rebalancer, optimize
from ._proposal import BoundCheck, LimitCheck, Proposal, Status, Trade
from ._solvers import CHAINS, ProblemClass, Verdict, verdict
from ._verify import Verification, Verifier, Violation
from ._spec import Costs, Lots, RebalanceSpec, TradeBounds, UnderlyingLimits, load_spec

__all__ = ["BoundCheck", "CHAINS", "Costs", "LimitCheck", "Lots", "ProblemClass", "Proposal", "RebalanceSpec",
           "Rebalancer", "Status", "Trade", "TradeBounds", "UnderlyingLimits", "Verdict", "Verification", "Verifier", "Violation", "load_spec",
           "optimize", "verdict"]
