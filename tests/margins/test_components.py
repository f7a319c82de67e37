"""Every margin component computed by hand: risk_matrix (pnl_offset, extended weight and
dampener), roll_shock, futures_size, short_option (inverse and linear), covariance_var (norm and
variance), scenario_max, scenario_es (against a hand sort) and calendar_spread (non-convex,
linearised with a supergradient)."""

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

import marginopt
from marginopt import (ModelError, Portfolio, UnsupportedInstrument, load_model,
                       parse_instrument)
from marginopt.margins._components import (AbsExposure, CalendarSpreadCharge, ExpectedShortfall,
                                          FactorRisk, RiskMatrix, ShortCharge, SizeCharge)
from marginopt.pricing import black76

from ..conftest import BOOK, INDEX

REL = 1e-12


def models_dir() -> Path:
    return Path(marginopt.__file__).parent / "models"


def shipped(name: str) -> dict:
    return yaml.safe_load((models_dir() / f"{name}.yaml").read_text())


def one_component_model(spec: dict, currencies=("BTC", "ETH"), pooling="per_underlying") -> marginopt.MarginModel:
    keys = ["ALL"] if pooling == "single" else list(currencies)
    return load_model({"name": "test", "pooling": pooling,
                       "currencies": {c: {"initial": [copy.deepcopy(spec)], "maintenance_factor": 1.0}
                                      for c in keys}})


def bound_component(model, positions, market, pool):
    book = Portfolio(positions)
    bound = model.bind(book.instruments, market)
    p = next(p for p in bound.pools if p.name == pool)
    return p.initial[0], book.quantities[p.columns], [book.instruments[j] for j in p.columns]


# ------------------------------------------------------------------ risk_matrix
def test_risk_matrix_by_hand():
    raw = np.array([[1.0, -2.0, 0.5], [-1.0, 1.0, 0.0], [0.2, 0.3, -4.0], [3.0, 0.0, 1.0]])
    rm = RiskMatrix("rm", ("a", "b", "c", "d"), raw, np.array([1.0, 1.0, 0.5, 0.25]),
                    np.array([0.0, 0.0, 0.1, 2.0]), pnl_offset=0.5)
    # x = (1, 2, 0.5): P x = (-2.75, 1, -1.2, 3.5); weighted (-2.75, 1, -0.6, 0.875);
    # losses max(-p, -0.5 p) - d = (2.75, -0.5, 0.5, -2.4375)
    x = np.array([1.0, 2.0, 0.5])
    np.testing.assert_allclose(rm._losses(x, rm.values()), [2.75, -0.5, 0.5, -2.4375], rtol=REL)
    assert rm.evaluate(x) == pytest.approx(2.75, rel=REL)
    assert rm.details(x)["worst_scenario"] == "a"
    assert rm.details(x)["scenario_pnl"] == pytest.approx([-2.75, 1.0, -1.2, 3.5])
    # x = (-1, 0, 0): weighted P x = (-1, 1, -0.1, -0.75); a gain p > 0 counts as the negative
    # loss max(-p, -0.5 p) = -0.5 p; dampeners (0, 0, 0.1, 2): losses (1, -0.5, 0, -1.25)
    y = np.array([-1.0, 0.0, 0.0])
    np.testing.assert_allclose(rm._losses(y, rm.values()), [1.0, -0.5, 0.0, -1.25], rtol=REL, atol=1e-15)
    assert rm.evaluate(y) == pytest.approx(1.0, rel=REL)


def test_risk_matrix_floors_at_zero_and_reports_no_worst_scenario():
    rm = RiskMatrix("rm", ("up", "down"), np.array([[1.0], [2.0]]), np.ones(2), np.zeros(2), 0.6)
    x = np.array([3.0])  # gains in every scenario
    assert rm.evaluate(x) == 0.0
    assert rm.details(x)["worst_scenario"] is None
    assert rm.evaluate(-x) == pytest.approx(6.0, rel=REL)


def test_pnl_offset_outside_0_1_is_rejected(market):
    spec = shipped("deribit-pm")["currencies"]["ETH"]["initial"][0] | {"pnl_offset": 1.5}
    with pytest.raises(ModelError, match="pnl_offset"):
        one_component_model(spec).bind([parse_instrument("ETH-PERPETUAL")], market)


@pytest.mark.parametrize("pool, rng_, damp", [("ETH", 0.18, 200_000.0), ("ETH_USDC", 0.18, 25_000.0),
                                              ("BTC", 0.16, 100_000.0), ("BTC_USDC", 0.16, 25_000.0)])
def test_extended_weights_and_dampeners(market, pool, rng_, damp):
    """Extended move m: weight = extended_table_factor x price_range / |m|, dampener =
    (|m| / price_range - 1) x extended_dampener (coin for inverse pools, USD for linear)."""
    ccy = pool.split("_")[0]
    name = f"{ccy}-PERPETUAL" if pool == ccy else f"{ccy}_USDC-PERPETUAL"
    rm, _, _ = bound_component(load_model("deribit-pm"), {name: 1.0}, market, pool)
    ext = np.array([-0.66, -0.33, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0])
    np.testing.assert_array_equal(rm.weight[:27], 1.0)
    np.testing.assert_array_equal(rm.dampener[:27], 0.0)
    np.testing.assert_allclose(rm.weight[27:], rng_ / np.abs(ext), rtol=REL)
    np.testing.assert_allclose(rm.dampener[27:], (np.abs(ext) / rng_ - 1) * damp, rtol=REL)


@pytest.mark.parametrize("factor", [1.0, 0.5])
def test_extended_scenario_binds_with_a_small_dampener(market, factor):
    """Long 10 ETH-PERPETUAL, dampener 0.01 coin: the -66% move loses 10 (1/0.34 - 1) coin, counted
    at factor x 0.18/0.66 and reduced by (0.66/0.18 - 1) x 0.01; that beats the -18% loss."""
    spec = shipped("deribit-pm")["currencies"]["ETH"]["initial"][0] | {
        "extended_dampener": {"inverse": 0.01, "linear": 1.0}, "extended_table_factor": factor}
    rm, x, _ = bound_component(one_component_model(spec), {"ETH-PERPETUAL": 10.0}, market, "ETH")
    ext_loss = factor * 0.18 / 0.66 * 10 * (1 / 0.34 - 1) - (0.66 / 0.18 - 1) * 0.01
    regular = 10 * (1 / 0.82 - 1)
    assert ext_loss > regular
    assert rm.evaluate(x) == pytest.approx(ext_loss, rel=REL)
    assert rm.details(x)["worst_scenario"] == "-66% vol up (extended)"


# ------------------------------------------------------------------ roll_shock
def test_abs_exposure_by_hand():
    e = np.array([[1.0, -2.0, 0.0], [0.0, 0.5, 3.0]])
    comp = AbsExposure("roll", e, ("A", "B"))
    assert comp.evaluate(np.array([1.0, 1.0, -1.0])) == pytest.approx(abs(1 - 2) + abs(0.5 - 3), rel=REL)


def test_roll_shock_exposure_matrix(market):
    spec = {"type": "roll_shock", "name": "roll", "min_annualised_move": 0.01, "annualised_move_risk": 0.075}
    positions = {"BTC-27SEP24": 1.0, "BTC-27DEC24-70000-C": -5.0, "BTC-27DEC24": 2.0, "BTC-PERPETUAL": 1.0}
    comp, x, insts = bound_component(one_component_model(spec), positions, market, "BTC")
    assert comp.labels == ("27DEC24", "27SEP24", "PERPETUAL")
    inp = market.pricing_inputs(insts)
    g = black76(inp.forward[1], 70_000.0, inp.t[1], inp.sigma[1], True, inverse=True)
    shock_dec = math.expm1(0.075 * inp.t[1])
    want = np.zeros((3, 4))
    want[0, 1], want[0, 2] = shock_dec * float(g.delta), shock_dec * 1.0
    want[1, 0] = 0.01
    want[2, 3] = 0.01
    np.testing.assert_allclose(comp.exposure, want, rtol=REL)
    assert comp.evaluate(x) == pytest.approx(abs(want[0] @ x) + 0.01 + 0.01, rel=REL)


def test_spot_carries_no_roll_shock(market):
    spec = {"type": "roll_shock", "name": "roll", "min_annualised_move": 0.01, "annualised_move_risk": 0.075}
    comp, x, _ = bound_component(one_component_model(spec), {"BTC_USDC": 5.0, "BTC_USDC-PERPETUAL": 1.0},
                                 market, "BTC_USDC")
    assert comp.labels == ("PERPETUAL",)
    assert comp.evaluate(x) == pytest.approx(0.01 * INDEX["BTC"], rel=REL)


# ------------------------------------------------------------------ futures_size
def test_size_charge_by_hand():
    comp = SizeCharge("fut", np.array([0.02, 0.0, 2.0]), np.array([5e-5, 0.0, 1e-3]))
    x = np.array([-25.0, 7.0, 3.0])
    assert comp.evaluate(x) == pytest.approx(0.02 * 25 + 5e-5 * 625 + 2 * 3 + 1e-3 * 9, rel=REL)


def test_futures_size_values(market):
    spec = {"type": "futures_size", "name": "fut", "base_rate": 0.02, "size_rate": 0.00005}
    positions = {"BTC_USDC-PERPETUAL": -3.0, "BTC_USDC": 1.0, "BTC_USDC-27SEP24-60000-P": -2.0}
    comp, x, _ = bound_component(one_component_model(spec), positions, market, "BTC_USDC")
    np.testing.assert_array_equal(comp.linear, [0.02 * 59_000, 0.0, 0.0])
    np.testing.assert_array_equal(comp.quadratic, [0.00005 * 59_000, 0.0, 0.0])
    assert comp.evaluate(x) == pytest.approx(3 * 59_000 * (0.02 + 3 * 0.00005), rel=REL)
    inv, xi, _ = bound_component(one_component_model(spec), {"BTC-27DEC24": 4.0, "BTC-PERPETUAL": -1.0},
                                 market, "BTC")
    np.testing.assert_array_equal(inv.linear, [0.02, 0.02])
    assert inv.evaluate(xi) == pytest.approx(4 * (0.02 + 4 * 5e-5) + 1 * (0.02 + 5e-5), rel=REL)


# ------------------------------------------------------------------ short_option
def test_short_charge_by_hand():
    comp = ShortCharge("opt", np.array([0.3, 0.2, 5.0]))
    assert comp.evaluate(np.array([-2.0, 4.0, -0.5])) == pytest.approx(0.6 + 2.5, rel=REL)


@pytest.mark.parametrize("which", ["initial", "maintenance"])
def test_short_option_charges_inverse(market, which):
    spec = {"type": "short_option", "name": "opt", "which": which}
    names = ["BTC-27SEP24-65000-C", "BTC-27SEP24-55000-P", "BTC-27DEC24-50000-C", "BTC-27DEC24-70000-P",
             "BTC-27DEC24"]
    comp, x, insts = bound_component(one_component_model(spec), {n: -1.0 for n in names}, market, "BTC")
    want = []
    for inst in insts:
        if not inst.is_option:
            want.append(0.0)
            continue
        row = market.rows.loc[inst.name]
        s, mark, k = row["underlying_price"], row["mark_price"], inst.strike
        otm = max(k - s, 0) if inst.is_call else max(s - k, 0)
        mm = 0.075 + mark if inst.is_call else max(0.075, 0.075 * mark) + mark
        im = max(0.15 - otm / s, 0.1) + mark
        im = im if inst.is_call else max(im, mm)
        want.append(im if which == "initial" else mm)
    np.testing.assert_allclose(comp.charge, want, rtol=REL)
    assert comp.evaluate(x) == pytest.approx(sum(want), rel=REL)
    assert comp.evaluate(-x) == 0.0


@pytest.mark.parametrize("which", ["initial", "maintenance"])
def test_short_option_charges_linear(market, which):
    spec = {"type": "short_option", "name": "opt", "which": which}
    names = ["BTC_USDC-27SEP24-60000-P", "BTC_USDC-27SEP24-55000-C", "BTC_USDC-27DEC24-65000-C",
             "BTC_USDC-PERPETUAL"]
    comp, x, insts = bound_component(one_component_model(spec), {n: -2.0 for n in names}, market, "BTC_USDC")
    want = []
    for inst in insts:
        if not inst.is_option:
            want.append(0.0)
            continue
        row = market.rows.loc[inst.name]
        s, mark, k = row["underlying_price"], row["mark_price"], inst.strike
        otm = max(k - s, 0) if inst.is_call else max(s - k, 0)
        want.append(max(0.15 * s - otm, 0.1 * s) + mark if which == "initial" else 0.075 * s + mark)
    np.testing.assert_allclose(comp.charge, want, rtol=REL)
    assert comp.evaluate(x) == pytest.approx(2 * sum(want), rel=REL)


# ------------------------------------------------------------------ covariance_var
COV_BOOK = {k: v for k, v in BOOK.items() if "_USDC" not in k}


def factor_exposures(market, positions):
    """e = (BTC delta USD, BTC vega USD per vol point, ETH delta, ETH vega) by hand."""
    e = np.zeros(4)
    for name, q in positions.items():
        inst = parse_instrument(name)
        k = 0 if inst.underlying == "BTC" else 2
        if inst.is_option:
            row = market.rows.loc[name]
            t = market.year_fraction(inst.expiry)
            g = black76(row["underlying_price"], inst.strike, t, row["mark_iv"] / 100, inst.is_call)
            e[k] += q * float(g.delta) * INDEX[inst.underlying]
            e[k + 1] += q * 0.01 * float(g.vega)
        else:
            e[k] += q * INDEX[inst.underlying]
    return e


def test_covariance_var_norm_by_hand(market):
    model = load_model("covariance-var")
    cov = np.array(shipped("covariance-var")["currencies"]["ALL"]["initial"][0]["covariance"])
    res = marginopt.margin(Portfolio(COV_BOOK), market, model)
    e = factor_exposures(market, COV_BOOK)
    want = 2.33 * math.sqrt(e @ cov @ e)
    assert res.initial_margin_usd == pytest.approx(want, rel=1e-10)
    assert res.by_underlying["ALL"].currency == "USD"
    assert res.maintenance_margin_usd == pytest.approx(want, rel=1e-10)


def test_covariance_var_variance_form_by_hand(market):
    data = shipped("covariance-var")
    data["currencies"]["ALL"]["initial"][0] |= {"form": "variance", "variance_coefficient": 0.5}
    cov = np.array(data["currencies"]["ALL"]["initial"][0]["covariance"])
    res = marginopt.margin(Portfolio(COV_BOOK), market, load_model(data))
    e = factor_exposures(market, COV_BOOK)
    assert res.initial_margin_usd == pytest.approx(0.5 * (e @ cov @ e), rel=1e-10)


def test_factor_risk_direct():
    root = np.array([[1.0, 2.0], [0.0, 3.0]])
    x = np.array([1.0, -1.0])
    assert FactorRisk("v", root, 2.0, "norm").evaluate(x) == pytest.approx(2 * math.hypot(-1, -3), rel=REL)
    assert FactorRisk("v", root, 2.0, "variance").evaluate(x) == pytest.approx(2 * 10, rel=REL)


def test_covariance_from_a_file(tmp_path, market):
    cov = np.array(shipped("covariance-var")["currencies"]["ALL"]["initial"][0]["covariance"])
    path = tmp_path / "cov.csv"
    np.savetxt(path, 4 * cov, delimiter=",")
    base = marginopt.margin(Portfolio(COV_BOOK), market, "covariance-var").initial_margin_usd
    doubled = marginopt.margin(Portfolio(COV_BOOK), market, load_model("covariance-var", covariance=path))
    assert doubled.initial_margin_usd == pytest.approx(2 * base, rel=1e-10)


@pytest.mark.parametrize("cov, why", [
    (np.eye(3), "4 x 4"),
    (np.eye(4) + np.triu(np.ones((4, 4)), 1) * 0.1, "symmetric"),
    (np.diag([1.0, -1.0, 1.0, 1.0]), "positive semidefinite"),
])
def test_bad_covariances(market, cov, why):
    with pytest.raises(ModelError, match=why):
        load_model("covariance-var", covariance=cov).bind([parse_instrument("BTC-PERPETUAL")], market)


# ------------------------------------------------------------------ scenario_max / scenario_es
def scenario_csv(tmp_path, names, pnl, labels=True):
    path = tmp_path / "scen.csv"
    head = (["scenario"] if labels else []) + names
    lines = [",".join(head)]
    for i, row in enumerate(pnl):
        lines.append(",".join(([f"day{i + 1}"] if labels else []) + [repr(float(v)) for v in row]))
    path.write_text("\n".join(lines) + "\n")
    return path


NAMES3 = ["BTC-PERPETUAL", "ETH-27DEC24-3000-C", "BTC_USDC-27SEP24-60000-P"]


def test_scenario_max_by_hand(tmp_path, market):
    pnl = np.array([[100.0, -3.0, 7.0], [-250.0, 2.0, 1.0], [40.0, -9.0, -12.0]])
    path = scenario_csv(tmp_path, NAMES3[::-1], pnl[:, ::-1])  # columns in another order
    model = load_model("scenario-max", scenario_matrix=path)
    x = {"BTC-PERPETUAL": 2.0, "ETH-27DEC24-3000-C": 10.0, "BTC_USDC-27SEP24-60000-P": -1.0}
    res = marginopt.margin(Portfolio(x), market, model)
    # P x = (200 - 30 - 7, -500 + 20 - 1, 80 - 90 + 12) = (163, -481, 2): worst loss 481 on day2
    assert res.initial_margin_usd == pytest.approx(481.0, rel=REL)
    assert res.by_underlying["ALL"].worst_scenario == "day2"
    gains = marginopt.margin(Portfolio({"BTC-PERPETUAL": 0.0}), market, model)
    assert gains.initial_margin_usd == 0.0


def test_scenario_matrix_errors(tmp_path, market):
    with pytest.raises(ModelError, match="scenario_matrix"):
        marginopt.margin(Portfolio({"BTC-PERPETUAL": 1.0}), market, "scenario-max")
    path = scenario_csv(tmp_path, NAMES3[:2], np.ones((3, 2)))
    with pytest.raises(UnsupportedInstrument) as err:
        marginopt.margin(Portfolio({"BTC-PERPETUAL": 1.0, NAMES3[2]: 1.0}), market,
                         load_model("scenario-max", scenario_matrix=path))
    assert err.value.row == NAMES3[2]
    bad = scenario_csv(tmp_path, NAMES3[:1], np.array([[1.0], [np.nan]]))
    with pytest.raises(ModelError, match="non-finite") as err:
        marginopt.margin(Portfolio({"BTC-PERPETUAL": 1.0}), market, load_model("scenario-max", scenario_matrix=bad))
    assert err.value.row == 2


def hand_es(losses, level):
    """Expected shortfall by sorting: the mean of the worst (1 - level) S losses, the boundary
    scenario counted fractionally."""
    losses = sorted(losses, reverse=True)
    tail = (1 - level) * len(losses)
    total, left = 0.0, tail
    for l in losses:
        take = min(1.0, left)
        if take <= 1e-12:
            break
        total += take * l
        left -= take
    return max(total / tail, 0.0)


@pytest.mark.parametrize("level, n", [(0.975, 200), (0.9, 25), (0.95, 60), (0.8, 7)])
def test_scenario_es_against_a_hand_sort(tmp_path, market, level, n):
    rng = np.random.default_rng(n)
    pnl = rng.normal(0, 1, (n, 3)) * [59_000 * 0.03, 20.0, 800.0]
    path = scenario_csv(tmp_path, NAMES3, pnl)
    data = shipped("scenario-es")
    data["currencies"]["ALL"]["initial"][0]["level"] = level
    model = load_model(load_model(data), scenario_matrix=path)
    x = np.array([1.5, -30.0, 4.0])
    res = marginopt.margin(Portfolio(dict(zip(NAMES3, x))), market, model)
    assert res.initial_margin_usd == pytest.approx(hand_es(-(pnl @ x), level), rel=1e-10)
    comp = ExpectedShortfall("es", tuple(map(str, range(n))), pnl, level)
    assert comp.evaluate(x) == pytest.approx(hand_es(-(pnl @ x), level), rel=1e-10)
    assert comp.evaluate(np.zeros(3)) == 0.0


def test_scenario_es_needs_enough_scenarios(tmp_path, market):
    path = scenario_csv(tmp_path, NAMES3, np.ones((10, 3)))
    with pytest.raises(ModelError, match="at least 40 scenarios"):
        marginopt.margin(Portfolio({"BTC-PERPETUAL": 1.0}), market,
                         load_model("scenario-es", scenario_matrix=path))


# ------------------------------------------------------------------ calendar_spread
CAL = {"type": "calendar_spread", "name": "calendar", "rate": 0.02, "convex": False}


def test_calendar_spread_must_be_declared_non_convex():
    with pytest.raises(ModelError, match="not convex"):
        one_component_model(CAL | {"convex": True})
    assert not one_component_model(CAL).convex


def test_calendar_spread_by_hand(market):
    positions = {"BTC-27SEP24": 3.0, "BTC-27DEC24": -1.0, "BTC-28MAR25-50000-P": -4.0, "BTC-PERPETUAL": 0.5}
    comp, x, insts = bound_component(one_component_model(CAL), positions, market, "BTC")
    assert isinstance(comp, CalendarSpreadCharge) and not comp.convex
    inp = market.pricing_inputs(insts)
    put = black76(inp.forward[2], 50_000.0, inp.t[2], inp.sigma[2], False, inverse=True)
    by_expiry = {"27SEP24": 3.0, "27DEC24": -1.0, "28MAR25": -4.0 * float(put.delta), "PERPETUAL": 0.5}
    longs = sum(0.02 * d for d in by_expiry.values() if d > 0)
    shorts = sum(-0.02 * d for d in by_expiry.values() if d < 0)
    assert comp.labels == tuple(sorted(by_expiry))
    assert comp.evaluate(x) == pytest.approx(min(longs, shorts), rel=REL)
    res = marginopt.margin(Portfolio(positions), market, one_component_model(CAL))
    assert res.by_underlying["BTC"].initial_margin == pytest.approx(min(longs, shorts), rel=REL)
    with pytest.raises(TypeError, match="not convex"):
        comp.term(None, {})


def test_calendar_spread_is_not_convex():
    comp = CalendarSpreadCharge("cal", np.eye(2), ("A", "B"), rate=0.02)
    x, y = np.array([1.0, 0.0]), np.array([0.0, -1.0])
    mid = comp.evaluate((x + y) / 2)
    assert mid == pytest.approx(0.01) and mid > (comp.evaluate(x) + comp.evaluate(y)) / 2


def test_calendar_spread_linearize_gives_a_supergradient():
    """Where every expiry keeps the sign of its delta, the charge is min(longs, shorts) of two
    linear functions, hence concave there: the linearisation's gradient is a supergradient,
    f(y) <= f(x) + g.(y - x), and equals the derivative where the minimum is unique."""
    rng = np.random.default_rng(5)
    e = rng.normal(0, 1, (4, 7))
    comp = CalendarSpreadCharge("cal", e, tuple("ABCD"), rate=0.03)
    checked = 0
    for _ in range(200):
        x = rng.normal(0, 1, 7)
        value, grad = comp.linearize(x)
        assert value == pytest.approx(comp.evaluate(x), rel=REL)
        d = comp.values()["delta"] @ x
        for _ in range(10):
            y = x + rng.normal(0, 0.05, 7)
            if np.any(np.sign(comp.values()["delta"] @ y) != np.sign(d)):
                continue
            assert comp.evaluate(y) <= value + grad @ (y - x) + 1e-12
            checked += 1
        longs, shorts = np.maximum(d, 0).sum(), np.maximum(-d, 0).sum()
        if abs(longs - shorts) > 1e-3:
            h = 1e-7
            fd = np.array([(comp.evaluate(x + h * u) - comp.evaluate(x - h * u)) / (2 * h) for u in np.eye(7)])
            np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)
    assert checked > 500


def test_convex_components_are_compiled_not_linearised():
    with pytest.raises(TypeError, match="convex"):
        ShortCharge("opt", np.ones(2)).linearize(np.zeros(2))


def test_calendar_spread_supergradient_is_only_local():
    """Across a sign change of an expiry's delta the inequality can fail: the charge is not
    concave globally, which is why the optimizer re-checks each linearised step."""
    comp = CalendarSpreadCharge("cal", np.eye(2), ("A", "B"), rate=0.02)
    x = np.array([1.0, -1.0])
    value, grad = comp.linearize(x)
    assert value == pytest.approx(0.02)
    y = np.array([-1.0, -1.0])  # expiry A flips from long to short
    assert comp.evaluate(y) > value + grad @ (y - x)
