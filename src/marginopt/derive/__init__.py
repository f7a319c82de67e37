"""Derive PM2 portfolio margin (on-chain options exchange, formerly Lyra).

``load_case`` reads a case file (account + market + rule parameters), ``build_risk_arrays`` turns
it into per-unit arrays, and ``maintenance_margin`` / ``initial_margin`` evaluate any position
vector ``x`` on them. ``marginopt.derive._convex`` builds the convex terms as cvxpy expressions.
See ``marginopt.derive._pm2`` for the rules implemented.
"""

from marginopt.derive._case import DeriveCase, DeriveExpected, case_from_mapping, load_case
from marginopt.derive._params import DeriveCaseError, DeriveParams, load_params
from marginopt.derive._pm2 import (
    CONVEXITY,
    DeriveMarginBreakdown,
    DeriveRiskArrays,
    base_contingency,
    build_risk_arrays,
    confidence_charge,
    forward_contingency,
    im_loss_factor,
    initial_margin,
    linearised_pnl_matrix,
    maintenance_margin,
    mark_to_market,
    naked_shorts,
    option_contingency,
    oracle_contingency,
    perp_contingency,
    scenario_pnl,
    skew_vol_multiplier,
    static_discounts,
    svi_vol,
    term_is_convex,
    vol_shock_multipliers,
    worst_losses,
)

__all__ = [
    "CONVEXITY",
    "DeriveCase",
    "DeriveCaseError",
    "DeriveExpected",
    "DeriveMarginBreakdown",
    "DeriveParams",
    "DeriveRiskArrays",
    "base_contingency",
    "build_risk_arrays",
    "case_from_mapping",
    "confidence_charge",
    "forward_contingency",
    "im_loss_factor",
    "initial_margin",
    "linearised_pnl_matrix",
    "load_case",
    "load_params",
    "maintenance_margin",
    "mark_to_market",
    "naked_shorts",
    "option_contingency",
    "oracle_contingency",
    "perp_contingency",
    "scenario_pnl",
    "skew_vol_multiplier",
    "static_discounts",
    "svi_vol",
    "term_is_convex",
    "vol_shock_multipliers",
    "worst_losses",
]
