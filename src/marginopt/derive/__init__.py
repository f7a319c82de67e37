"""Derive PM2 portfolio margin (on-chain options exchange, formerly Lyra).

``load_case`` reads a case file (account + market + rule parameters), ``build_risk_arrays`` turns
it into per-unit arrays, and ``maintenance_margin`` / ``initial_margin`` evaluate any position
vector ``x`` on them. ``marginopt.derive._convex`` builds the convex terms as cvxpy expressions.
See ``marginopt.derive._pm2`` for the rules implemented.

In the engine: the ``derive_pm2`` margin component (``models/derive-pm2.yaml``,
``marginopt.derive._component``) and ``to_marginopt(case) -> (Portfolio, MarketSnapshot,
MarginModel)`` (``load_case_as_book(path)``), so ``marginopt.margin`` and ``marginopt.optimize``
run on a Derive account like on any book.

From Derive's own API replies (``marginopt.derive._api``): ``derive_market(tickers, ...)``,
``derive_portfolio(positions)`` and ``derive_model(subaccount, feeds, ...)`` (PM2 with the
subaccount's collaterals and the oracles' feeds); ``marginopt_name`` / ``native_name`` translate
``ETH-20250228-3000-C`` <-> ``ETH_USDC-28FEB25-3000-C``.
"""

from marginopt.derive._case import DeriveCase, DeriveExpected, case_from_mapping, load_case
from marginopt.derive._params import DeriveCaseError, DeriveParams, load_params, params_to_block
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
    requirement_gradient,
    scenario_pnl,
    skew_vol_multiplier,
    static_discounts,
    svi_vol,
    term_is_convex,
    vol_shock_multipliers,
    worst_losses,
)
from marginopt.derive._component import DerivePM2Margin, DerivePM2Spec
from marginopt.derive._book import case_valuation_time, load_case_as_book, to_marginopt
from marginopt.derive._api import (
    DeriveSubaccount,
    derive_feeds,
    derive_market,
    derive_model,
    derive_portfolio,
    derive_subaccount,
    marginopt_name,
    native_name,
)

__all__ = [
    "CONVEXITY",
    "DeriveCase",
    "DeriveCaseError",
    "DeriveExpected",
    "DeriveMarginBreakdown",
    "DeriveParams",
    "DerivePM2Margin",
    "DerivePM2Spec",
    "DeriveRiskArrays",
    "DeriveSubaccount",
    "base_contingency",
    "build_risk_arrays",
    "case_from_mapping",
    "case_valuation_time",
    "confidence_charge",
    "derive_feeds",
    "derive_market",
    "derive_model",
    "derive_portfolio",
    "derive_subaccount",
    "forward_contingency",
    "im_loss_factor",
    "initial_margin",
    "linearised_pnl_matrix",
    "load_case",
    "load_case_as_book",
    "load_params",
    "maintenance_margin",
    "marginopt_name",
    "mark_to_market",
    "naked_shorts",
    "native_name",
    "option_contingency",
    "oracle_contingency",
    "params_to_block",
    "perp_contingency",
    "requirement_gradient",
    "scenario_pnl",
    "skew_vol_multiplier",
    "static_discounts",
    "svi_vol",
    "term_is_convex",
    "to_marginopt",
    "vol_shock_multipliers",
    "worst_losses",
]
