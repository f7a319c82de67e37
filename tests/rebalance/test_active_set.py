"""Scenario generation (``rebalance/_active_set.py``): large scenario sets solved over an active
set of scenarios (scenario-max) or of expected-shortfall tail cuts then the exact form over the
scenarios near the tail (scenario-es), certified on the full set. Against the whole LP on random
books and matrices (3,000 scenarios x 60 instruments); the cut formulation and the exact form over
some scenarios against ``ExpectedShortfall.evaluate``; the matrix read once per model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import marginopt as mo
from marginopt._io import read_matrix
from marginopt.errors import ModelError
from marginopt.margins import _components
from marginopt.margins._components import ExpectedShortfall, RiskMatrix
from marginopt.rebalance import _active_set
from marginopt.synthetic import make_book, make_market

from .conftest import assert_sound

S, N = 3000, 60
REL = 1e-8


@pytest.fixture(scope="module")
def market() -> mo.MarketSnapshot:
    return make_market()


def _pnl(market: mo.MarketSnapshot, names: list[str], rng: np.random.Generator, s: int = S) -> np.ndarray:
    """USD P&L per unit from fat-tailed spot moves (BTC and ETH correlated), vol shocks against
    them, gamma, and noise: many scenarios near the worst, not one."""
    insts = [mo.parse_instrument(n) for n in names]
    inp = market.pricing_inputs(insts)
    z = rng.standard_t(4, (s, 2)) * 0.035
    eth = np.array([i.underlying == "ETH" for i in insts])
    r = np.where(eth, 0.8 * z[:, [0]] + 0.6 * z[:, [1]], z[:, [0]])
    dvol = -60.0 * r + rng.normal(0.0, 3.0, (s, 1))
    return (r * inp.coin_delta() * inp.index + 50.0 * r * r * inp.gamma_coin() * inp.index
            + dvol * inp.vega_usd() + rng.normal(0.0, 1.0, (s, len(names))) * 0.0005 * inp.index)


def _case(market: mo.MarketSnapshot, kind: str, seed: int, tmp_path, objective: dict | None = None):
    """A random book of the synthetic market, a universe of N names, a scenario matrix over them
    (a CSV with labels, its columns in another order than the universe) and a spec."""
    rng = np.random.default_rng(seed)
    book = make_book(market, n_structures=int(rng.integers(6, 14)), seed=seed)
    others = sorted(n for n in market.instrument_names if n not in book.positions)
    universe = book.names + [str(n) for n in rng.choice(others, size=N - len(book), replace=False)]
    cols = sorted(universe)
    pnl = _pnl(market, cols, rng)
    path = tmp_path / f"{kind}-{seed}.csv"
    header = ",".join(["scenario", *cols])
    rows = [f"day{i + 1}," + ",".join(repr(float(v)) for v in row) for i, row in enumerate(pnl)]
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    model = mo.load_model(f"scenario-{kind}", scenario_matrix=path)
    spec = {"universe": universe, "limits": {"BTC": {"delta": [-5, 5]}, "ETH": {"delta": [-30, 30]}},
            "trade_bounds": {"max_open_interest_fraction": 0.25}, **(objective or {})}
    return book, model, spec, pnl, cols


def _whole(monkeypatch, model, spec, book, market) -> mo.Proposal:
    """The same problem solved whole (scenario generation off)."""
    with monkeypatch.context() as m:
        m.setattr(_active_set, "MIN_SCENARIOS", 10 ** 9)
        reb = mo.Rebalancer(model, spec)
        p = reb.optimize(book, market)
    assert not any("scenario generation" in n for n in p.notes)
    return p


def _check_certified(p: mo.Proposal, book, market, model) -> None:
    """Verified on the full set: the calculator's margin on the post-trade book is the
    proposal's, and the solver's (the relaxation's) agrees with it."""
    assert_sound(p)
    assert p.verified_by.endswith(f"on all {S:,} scenarios"), p.verified_by
    assert any(n.startswith("scenario generation:") for n in p.notes), p.notes
    after = mo.margin(book.apply(p.trade_quantities), market, model)
    assert after.initial_margin_usd == pytest.approx(p.margin_after.initial_margin_usd, rel=1e-12)
    assert p.solver_margin_usd == pytest.approx(p.margin_after.initial_margin_usd, rel=1e-7, abs=1e-4)


# ----------------------------------------------------------------------------- against the whole LP
@pytest.mark.parametrize("kind", ["max", "es"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generated_answer_is_the_whole_lp_answer(market, tmp_path, monkeypatch, kind, seed):
    book, model, spec, _, _ = _case(market, kind, seed, tmp_path)
    reb = mo.Rebalancer(model, spec)
    p = reb.optimize(book, market)
    _check_certified(p, book, market, model)
    assert p.solver == "HIGHS (native)"
    q = _whole(monkeypatch, model, spec, book, market)
    # the same optimum: objective and margin (the least-trading answer is unique: the same trades)
    assert p.margin_after.initial_margin_usd == pytest.approx(q.margin_after.initial_margin_usd, rel=REL)
    assert p.margin_after.initial_margin_usd + p.cost_usd == pytest.approx(
        q.margin_after.initial_margin_usd + q.cost_usd, rel=REL)
    assert p.trade_quantities.keys() == q.trade_quantities.keys()
    for name, qty in q.trade_quantities.items():
        assert p.trade_quantities[name] == pytest.approx(qty, rel=1e-6, abs=1e-9)
    # far fewer rows than scenarios
    assert 0 < sum(reb.scenarios.sizes.values()) < S / 4
    if kind == "es":  # phase 1 ended in the exact form over the scenarios near the tail
        assert any("exact over" in n for n in p.notes), p.notes


@pytest.mark.parametrize("kind", ["max", "es"])
def test_free_margin_and_cvxpy_path(market, tmp_path, monkeypatch, kind):
    """The objective with margin as a constraint, and the cvxpy path (padded relaxations, DPP
    updates): the same answers as the whole problem."""
    book, model, spec, _, _ = _case(market, kind, 4, tmp_path)
    before = mo.margin(book, market, model).initial_margin_usd
    free = {**spec, "objective": "free_margin", "free_margin_usd": round(0.3 * before, 2)}
    p = mo.Rebalancer(model, free).optimize(book, market)
    _check_certified(p, book, market, model)
    q = _whole(monkeypatch, model, free, book, market)
    assert p.margin_before.initial_margin_usd - p.margin_after.initial_margin_usd >= 0.3 * before * (1 - 1e-9)
    assert p.cost_usd == pytest.approx(q.cost_usd, rel=REL)
    c = mo.Rebalancer(model, {**spec, "solver": "cvxpy"}).optimize(book, market)
    _check_certified(c, book, market, model)
    w = _whole(monkeypatch, model, spec, book, market)
    assert c.margin_after.initial_margin_usd + c.cost_usd == pytest.approx(
        w.margin_after.initial_margin_usd + w.cost_usd, rel=1e-7)


@pytest.mark.parametrize("gap", [1.0, _active_set.EXACT_GAP])
def test_expected_shortfall_in_two_pools(market, tmp_path, monkeypatch, gap):
    """Two generated components (a BTC and an ETH pool, each over its own instruments' columns),
    in the exact form from phase 1's first round (gap 1) or near the optimum: the whole LP's
    answer."""
    monkeypatch.setattr(_active_set, "EXACT_GAP", gap)
    book, _, spec, pnl, cols = _case(market, "es", 11, tmp_path)
    coin = np.array([market.index_prices[mo.parse_instrument(c).underlying] for c in cols])
    path = tmp_path / "per-coin.csv"  # P&L per unit in coin: the pools settle in their coin
    rows = [f"day{i + 1}," + ",".join(repr(float(v)) for v in row) for i, row in enumerate(pnl / coin)]
    path.write_text(",".join(["scenario", *cols]) + "\n" + "\n".join(rows) + "\n")
    data = mo.load_model("scenario-es").model_dump(exclude={"path"})
    comp = data["currencies"]["ALL"]["initial"][0] | {"matrix": str(path)}
    data |= {"pooling": "per_underlying",
             "currencies": {u: {"initial": [comp], "maintenance_factor": 1.0} for u in ("BTC", "ETH")}}
    model = mo.load_model(data)
    p = mo.Rebalancer(model, spec).optimize(book, market)
    assert_sound(p)
    assert p.verified_by.endswith(f"on all {2 * S:,} scenarios"), p.verified_by
    assert any("exact over" in why for _, why in p.attempts)
    q = _whole(monkeypatch, model, spec, book, market)
    assert p.margin_after.initial_margin_usd + p.cost_usd == pytest.approx(
        q.margin_after.initial_margin_usd + q.cost_usd, rel=REL)


def test_lots_rounded_after_generation(market, tmp_path):
    book, model, spec, _, _ = _case(market, "max", 5, tmp_path)
    p = mo.Rebalancer(model, {**spec, "lots": {"mode": "round"}}).optimize(book, market)
    assert_sound(p)  # the verifier checks whole lots; rounded trades claim no solver margin
    assert p.verified_by.endswith(f"on all {S:,} scenarios"), p.verified_by
    assert any("lot" in n for n in p.notes), p.notes
    after = mo.margin(book.apply(p.trade_quantities), market, model)
    assert after.initial_margin_usd == pytest.approx(p.margin_after.initial_margin_usd, rel=1e-12)


def test_rounds_add_the_scenario_that_binds(market, tmp_path):
    """The worst scenario at the answer is not among the book's worst: the relaxation had to
    grow to find it, and the answer is still certified."""
    book, model, spec, pnl, cols = _case(market, "max", 6, tmp_path)
    reb = mo.Rebalancer(model, spec)
    p = reb.optimize(book, market)
    _check_certified(p, book, market, model)
    x0 = np.array([book.positions.get(c, 0.0) for c in cols])
    initial = np.argsort(pnl @ x0)[: _active_set.INITIAL_WORST]  # the most negative P&L
    post = book.apply(p.trade_quantities).positions
    x1 = np.array([post.get(c, 0.0) for c in cols])
    assert int(np.argmin(pnl @ x1)) not in set(initial.tolist())
    assert sum(reb.scenarios.sizes.values()) > _active_set.INITIAL_WORST
    assert any("stage 1 alone" in why and "round(s)" in why for _, why in p.attempts)


def test_warm_answer_is_the_cold_answer(market, tmp_path):
    """A re-used Rebalancer (its last active set seeding the next) answers a moved snapshot as a
    new one does; its caches keep one relaxation size."""
    book, model, spec, _, _ = _case(market, "es", 7, tmp_path)
    rows = market.rows.copy()
    rows["underlying_price"] *= 1.003
    rows["mark_iv"] += 0.1
    moved = mo.MarketSnapshot(market.valuation_time, {u: p * 1.003 for u, p in market.index_prices.items()}, rows)
    reb = mo.Rebalancer(model, spec)
    reb.optimize(book, market)
    warm = reb.optimize(book, moved)
    cold = mo.Rebalancer(model, spec).optimize(book, moved)
    _check_certified(warm, book, moved, model)
    assert warm.trade_quantities.keys() == cold.trade_quantities.keys()
    for name, qty in cold.trade_quantities.items():
        assert warm.trade_quantities[name] == pytest.approx(qty, rel=1e-6, abs=1e-9)
    assert warm.margin_after.initial_margin_usd == pytest.approx(cold.margin_after.initial_margin_usd, rel=REL)
    assert len(reb.native._models) <= 2 and len(reb._problems) <= 2


def test_small_sets_are_solved_whole(market, tmp_path):
    book, model, spec, _, _ = _case(market, "max", 8, tmp_path)
    small = model.model_dump(exclude={"path"})
    comp = small["currencies"]["ALL"]["initial"][0]
    data = model.currencies["ALL"].initial[0].load(None)
    comp |= {"matrix": data[2][: _active_set.MIN_SCENARIOS].tolist(), "instruments": data[1]}
    p = mo.optimize(book, market, mo.load_model(small), spec)
    assert not any("scenario generation" in n for n in p.notes)
    assert not p.verified_by.endswith("scenarios")


# ----------------------------------------------------------------------------- the relaxations
@pytest.mark.parametrize("s, level", [(1010, 0.975), (400, 0.9), (1000, 0.975), (333, 0.95)])
def test_tail_cuts_match_evaluate(s, level):
    """Each cut equals the expected shortfall at its own point (fractional tails too) and is
    at most it everywhere; the cut relaxation is the worst cut, floored at zero."""
    rng = np.random.default_rng(s)
    pnl = rng.normal(0.0, 1.0, (s, 7)) * rng.uniform(1, 100, 7)
    es = ExpectedShortfall("es", tuple(map(str, range(s))), pnl, level)
    points = rng.normal(0.0, 1.0, (20, 7))
    tails = [es.worst_tail(x) for x in points]
    for x, (rows, weights) in zip(points, tails):
        tail = (1 - level) * s
        assert weights.sum() == pytest.approx(1.0, rel=1e-12)
        assert weights.max() <= 1.0 / tail * (1 + 1e-12)
        cut = -(weights @ pnl[rows]) @ x
        assert max(cut, 0.0) == pytest.approx(es.evaluate(x), rel=1e-12, abs=1e-12)
    relaxed = es.cuts(tails, capacity=64)
    assert relaxed.n_scenarios == 64
    for y in rng.normal(0.0, 1.0, (50, 7)):
        each = [-(w @ pnl[r]) @ y for r, w in tails]
        assert relaxed.evaluate(y) == pytest.approx(max(max(each), 0.0), rel=1e-12, abs=1e-12)
        assert relaxed.evaluate(y) <= es.evaluate(y) + 1e-12 * max(1.0, abs(es.evaluate(y)))
    for x in points:
        assert relaxed.evaluate(x) == pytest.approx(es.evaluate(x), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("s, level", [(1010, 0.975), (400, 0.9), (333, 0.95)])
def test_exact_form_over_a_subset_is_a_lower_bound(s, level):
    """Expected shortfall over some scenarios with the whole set's tail size: at most the true
    one everywhere, equal to it where the tail lies among them, and its value from the losses
    (``_es_columns``) is ``evaluate``'s."""
    rng = np.random.default_rng(s)
    pnl = rng.normal(0.0, 1.0, (s, 7)) * rng.uniform(1, 100, 7)
    es = ExpectedShortfall("es", tuple(map(str, range(s))), pnl, level)
    tail = (1 - level) * s
    for x in rng.normal(0.0, 1.0, (20, 7)):
        rows = rng.choice(s, int(2 * tail) + 3, replace=False)
        part = _active_set._over(es, rows)
        assert part.n_scenarios == rows.size
        assert part.evaluate(x) <= es.evaluate(x) + 1e-12 * max(1.0, es.evaluate(x))
        assert _active_set._es_columns(es, -(pnl[rows] @ x)[:, None])[0] == pytest.approx(
            part.evaluate(x), rel=1e-12, abs=1e-12)
        with_tail = np.unique(np.r_[rows, es.worst_tail(x)[0]])
        assert _active_set._over(es, with_tail).evaluate(x) == pytest.approx(
            es.evaluate(x), rel=1e-12, abs=1e-12)
        # the worst EXACT_MARGIN tails at a point hold its tail
        near = _active_set._worst(es, -(pnl @ x))
        assert np.isin(es.worst_tail(x)[0], near).all()


def test_losses_from_the_traded_columns():
    """An answer's losses from the book's P&L plus its traded columns are the whole product's."""
    rng = np.random.default_rng(5)
    pnl = np.asfortranarray(rng.normal(0.0, 1.0, (3000, 80)))
    es = ExpectedShortfall("es", tuple(map(str, range(3000))), pnl, 0.975)
    x0 = rng.normal(0.0, 5.0, 80)
    tails = _active_set._Tails.seed(es, x0, None)
    x = np.repeat(x0[:, None], 3, axis=1)
    x[[3, 17], 0] += [1.5, -2.0]
    x[40, 2] -= 0.25  # the middle point trades nothing
    np.testing.assert_allclose(tails._losses(es, x), -(pnl @ x), rtol=1e-12, atol=1e-9)
    dense = x0[:, None] + rng.normal(0.0, 1.0, (80, 2))  # most instruments traded: the product
    np.testing.assert_allclose(tails._losses(es, dense), -(pnl @ dense), rtol=1e-12, atol=1e-9)


def test_exact_form_grown_by_the_whole_search(market, tmp_path, monkeypatch):
    """The exact form started from the tail alone at phase 1's answer (no margin around it): the
    whole search's answers show scenarios outside it, they join, and the answer is still the
    whole LP's."""
    monkeypatch.setattr(_active_set, "EXACT_MARGIN", 1.0)
    monkeypatch.setattr(_active_set, "EXACT_KEEP", 1.0)
    book, model, spec, _, _ = _case(market, "es", 4, tmp_path)
    reb = mo.Rebalancer(model, spec)
    p = reb.optimize(book, market)
    _check_certified(p, book, market, model)
    assert reb.scenarios.rounds[1] >= 2  # at least one whole search found scenarios to add
    assert any("exact over" in why and "violated at its answers, added" in why for _, why in p.attempts)
    q = _whole(monkeypatch, model, spec, book, market)
    assert p.margin_after.initial_margin_usd + p.cost_usd == pytest.approx(
        q.margin_after.initial_margin_usd + q.cost_usd, rel=REL)
    assert p.margin_after.initial_margin_usd == pytest.approx(q.margin_after.initial_margin_usd, rel=REL)


def test_restricted_worst_loss_is_a_lower_bound():
    rng = np.random.default_rng(0)
    pnl = rng.normal(0.0, 1.0, (500, 6))
    w, d = rng.uniform(0.5, 2, 500), rng.uniform(0, 0.1, 500)
    full = RiskMatrix("rm", tuple(map(str, range(500))), pnl, w, d, 0.3)
    rows = rng.choice(500, 40, replace=False)
    part = full.restricted(rows, capacity=64)
    assert part.n_scenarios == 64
    for x in rng.normal(0.0, 1.0, (30, 6)):
        assert part.evaluate(x) <= full.evaluate(x) + 1e-12
        worst = int(np.argmax(full.losses(x)))
        with_worst = full.restricted(np.r_[rows[rows != worst], worst], capacity=128)
        assert with_worst.evaluate(x) == pytest.approx(full.evaluate(x), rel=1e-12)


# ----------------------------------------------------------------------------- reading
def test_matrix_read_once_per_model(market, tmp_path, monkeypatch):
    book, model, spec, pnl, cols = _case(market, "max", 9, tmp_path)
    calls = []
    real = _components._fast_scenario_csv
    monkeypatch.setattr(_components, "_fast_scenario_csv", lambda p: calls.append(p) or real(p))
    reb = mo.Rebalancer(model, spec)
    reb.optimize(book, market)
    reb.optimize(book, market)
    assert len(calls) == 1  # the book, the universe and the post-trade book bind from one parse
    labels, names, arr = model.currencies["ALL"].initial[0].load(None)
    assert arr.dtype == np.float64 and not arr.flags.writeable
    assert names == [c.upper() for c in cols] and labels[:2] == ("day1", "day2")
    np.testing.assert_allclose(arr, pnl, rtol=1e-15, atol=0)
    # the general reader (pandas) reads the same numbers
    frame = read_matrix(Path(model.currencies["ALL"].initial[0].matrix), "m", ModelError, header=True)
    np.testing.assert_allclose(frame.iloc[:, 1:].to_numpy(dtype=float), arr, rtol=1e-15, atol=0)
