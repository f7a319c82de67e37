"""The randomised audit of issue 8 ("proven proposals"): every shipped proposal obeys every rule of
its spec, its margin is the calculator's, verdicts are true, no raw exception escapes; and a
re-used Rebalancer answers exactly as a fresh one. Generators and the independent checker are in
``_audit.py``; ``python benchmarks/audit.py`` prints the whole breakdown.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import marginopt as mo

from . import _audit as A

CASES_PER_CHUNK = 50
AUDIT_CHUNKS = 8            # 400 cases
SEQUENCES_PER_CHUNK = 50
SEQUENCE_CHUNKS = 4         # 200 snapshot sequences


# ------------------------------------------------------------------ the checker itself
def test_independent_greeks_match_the_pricing_inputs():
    for key in ("syn-a", "mixed"):
        market = A.base_market(key)
        names = market.instrument_names
        inputs = market.pricing_inputs([mo.parse_instrument(n) for n in names])
        g = A.greeks(market, names)
        np.testing.assert_allclose(g["delta"], inputs.coin_delta(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(g["vega"], inputs.vega_usd(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(g["gamma"], inputs.gamma_coin(), rtol=1e-9, atol=1e-12)


def _planted_case() -> A.Case:
    market = A.base_market("mixed")
    rows = market.rows.loc[["BTC-PERPETUAL", "BTC-27SEP24", "BTC-27SEP24-55000-P", "BTC-27SEP24-65000-C",
                            "BTC-27DEC24-60000-C", "ETH-PERPETUAL", "ETH-27SEP24-2200-P"]].copy()
    rows.loc["BTC-27SEP24-65000-C", "ask_price"] = np.nan
    rows.loc["BTC-27DEC24-60000-C", "open_interest"] = 0.0
    rows.loc["BTC-27SEP24", "open_interest"] = 5.9e6  # USD: 100 BTC at the mark of ~59,000
    snap = A.snapshot(rows, market)
    book = mo.Portfolio({"BTC-27SEP24-55000-P": -2.0, "BTC-27SEP24-65000-C": -1.0, "BTC-PERPETUAL": 1.0,
                         "ETH-27SEP24-2200-P": -10.0})
    spec = {"universe": "held+futures", "do_not_trade": ["ETH-27SEP24-2200-P"],
            "close_only": ["BTC-27SEP24-55000-P"], "no_new_instruments": False,
            "limits": {"BTC": {"delta": [-0.5, 0.5]}},
            "trade_bounds": {"max_quantity": 3.0, "max_quantity_by_instrument": {"BTC-PERPETUAL": 0.5},
                             "max_open_interest_fraction": 0.1, "turnover_usd": 200_000.0,
                             "max_instruments": 2},
            "lots": {"mode": "round"}}
    return A.Case("planted", 0, book, snap, "deribit-pm", mo.load_model("deribit-pm"), spec)


@pytest.mark.parametrize("trades, category", [
    ({"ETH-27SEP24-2200-P": 1.0}, "rule_do_not_trade"),
    ({"BTC-27SEP24-55000-P": 2.5}, "rule_close_only"),           # crosses zero
    ({"BTC-27SEP24-55000-P": -0.1}, "rule_close_only"),          # adds to the short
    ({"BTC-27SEP24-65000-C": 0.5}, "rule_frozen_side"),          # no ask: no buy
    ({"BTC-27SEP24-65000-C": -3.1}, "rule_max_quantity"),
    ({"BTC-PERPETUAL": -0.6}, "rule_max_quantity_by_instrument"),
    ({"BTC-27SEP24": 10.5}, "rule_open_interest"),               # 0.1 x 5.9e6 USD / mark = ~10 BTC
    ({"BTC-27SEP24": 2.0, "BTC-27SEP24-55000-P": 1.5}, "rule_turnover"),
    ({"BTC-27SEP24": 0.1, "BTC-27SEP24-55000-P": 0.1, "BTC-PERPETUAL": 0.1}, "rule_max_instruments"),
    ({"BTC-27SEP24-55000-P": 0.15}, "rule_lots"),
    ({"BTC-27DEC24": 1.0}, "rule_universe"),                     # not in the (trimmed) market
])
def test_checker_catches_planted_violations(trades, category):
    checker = A.Checker(_planted_case())
    found = {f.category for f in checker.check_trades(trades)}
    assert category in found, found


def test_checker_passes_a_clean_trade_and_catches_a_limit_break():
    checker = A.Checker(_planted_case())
    assert checker.check_trades({"BTC-27SEP24-55000-P": 0.5}) == []
    # the book's BTC delta is ~1.6: the limit [-0.5, 0.5] is broken before and, untouched, after
    found, breached = checker.check_limits({})
    assert breached and [f.category for f in found] == ["limit_violation"]
    g = A.greeks(checker.market, checker.book.names)
    hedge = {"BTC-27SEP24": -float(np.where(g["und"] == "BTC", g["delta"], 0.0) @ checker.book.quantities)}
    found, _ = checker.check_limits(hedge)
    assert found == []


def test_generators_cover_the_space():
    """What the audit draws (no optimisation: cheap)."""
    seen: Counter = Counter()
    for s in range(CASES_PER_CHUNK * AUDIT_CHUNKS):
        case = A.make_case(s)
        spec = case.spec
        seen[f"model:{case.model_name}"] += 1
        seen[f"objective:{spec['objective']}"] += 1
        u = spec["universe"]
        seen[f"universe:{'list' if isinstance(u, list) else u}"] += 1
        seen[f"lots:{(spec.get('lots') or {}).get('mode', 'none')}"] += 1
        for k in (spec.get("trade_bounds") or {}):
            seen[f"bound:{k}"] += 1
        for k in ("do_not_trade", "close_only", "no_new_instruments", "relative_limits",
                  "delta_shock_threshold_usd", "solver"):
            seen[k] += k in spec
        seen["limits"] += bool(spec.get("limits"))
        seen["vega_buckets"] += any("vega_buckets" in v for v in (spec.get("limits") or {}).values())
        seen["relative_true"] += any(v.get("relative") for v in (spec.get("limits") or {}).values())
        seen["impact"] += bool((spec.get("costs") or {}).get("impact"))
        seen["no_spread_cost"] += (spec.get("costs") or {}).get("spread", True) is False
        rows = case.market.rows
        seen["no_bid"] += bool(rows["bid_price"].isna().any())
        seen["no_ask"] += bool(rows["ask_price"].isna().any())
        seen["oi_zero"] += bool((rows["open_interest"] == 0).any())
        seen["oi_missing"] += bool(rows["open_interest"].isna().any())
    for m in A.ALL_MODELS:
        assert seen[f"model:{m}"] >= 20, seen
    for key in ("objective:min_margin", "objective:free_margin", "objective:margin_plus_cost",
                "universe:held", "universe:held+futures", "universe:listed", "universe:list",
                "lots:none", "lots:round", "lots:exact", "bound:max_quantity",
                "bound:max_quantity_by_instrument", "bound:max_open_interest_fraction",
                "bound:turnover_usd", "bound:max_instruments", "do_not_trade", "close_only",
                "no_new_instruments", "relative_limits", "delta_shock_threshold_usd", "solver", "limits",
                "vega_buckets", "relative_true", "impact", "no_spread_cost", "no_bid", "no_ask",
                "oi_zero", "oi_missing"):
        assert seen[key] >= (5 if key == "solver" else 10), (key, seen)


# ------------------------------------------------------------------ the audit
@pytest.mark.parametrize("chunk", range(AUDIT_CHUNKS))
def test_audit_finds_no_violation(chunk):
    """Shipped proposals obey every rule and limit of the spec, carry the calculator's margin
    (never above the book's unless restoring limits), agree with the solver's margin, free what
    free_margin asked; Infeasible is confirmed by an independent LP/MILP, Unbounded never
    happens, every failure is a MarginoptError and every case yields a proposal or a true
    verdict."""
    summary = A.audit(range(chunk * CASES_PER_CHUNK, (chunk + 1) * CASES_PER_CHUNK))
    assert not summary["violations"], A.format_report(summary)


# ------------------------------------------------------------------ cached vs fresh
@pytest.mark.parametrize("chunk", range(SEQUENCE_CHUNKS))
def test_cached_rebalancer_answers_as_a_fresh_one(chunk):
    """One Rebalancer re-used across 3-4 snapshots of one book (quotes appear and disappear,
    open interest goes to zero or missing, instruments are listed and de-listed, time moves on)
    answers every snapshot exactly as a fresh Rebalancer does (trades to 1e-9, status, margin
    after; or the same error type); no raw exception on either path."""
    bad = []
    for s in range(chunk * SEQUENCES_PER_CHUNK, (chunk + 1) * SEQUENCES_PER_CHUNK):
        bad += A.run_sequence(A.make_sequence(s))
    seqs = sorted({b.split(" ")[0] for b in bad})
    assert not bad, (f"{len(bad)} cached answers in {len(seqs)} of {SEQUENCES_PER_CHUNK} sequences differ "
                     "from a fresh Rebalancer's:\n" + "\n".join(b[:700] for b in bad[:12]))
