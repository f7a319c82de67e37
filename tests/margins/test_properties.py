"""Property tests (hypothesis): convexity of every convex component on random books, invariance of
the margin to row order and to splitting a position over several rows, exact future scenarios."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import marginopt
from marginopt import Portfolio, parse_instrument
from marginopt.scenarios import ScenarioGrid, revalue

from .conftest import CASES

FAST = settings(max_examples=50, deadline=None, derandomize=True)
#: the margin() level properties bind a model per example: fewer examples keep the file fast
BOOKS = settings(max_examples=30, deadline=None, derandomize=True)
qty = st.floats(-200.0, 200.0, allow_nan=False, allow_infinity=False)


def sparse_book(n: int):
    """A book over n instruments holding up to 10 of them."""
    return st.dictionaries(st.integers(0, n - 1), qty, max_size=10).map(
        lambda d: np.bincount(list(d), weights=list(d.values()), minlength=n).astype(float))


@pytest.mark.parametrize("cid", CASES)
def test_convex_components_are_convex(convex_cases, cid):
    case = convex_cases[cid]
    f = case.component.evaluate
    n = case.book.size

    @FAST
    @given(sparse_book(n), sparse_book(n), st.booleans())
    def midpoint(x, y, around_book):
        if around_book:  # trades around the shared book, not just books from scratch
            x, y = x + case.book, y + case.book
        fx, fy, fm = f(x), f(y), f(0.5 * (x + y))
        assert fm <= 0.5 * (fx + fy) + 1e-9 * (abs(fx) + abs(fy)) + 1e-12

    midpoint()


@pytest.mark.parametrize("cid", [c for c in CASES if c.startswith("deribit-pm") and c.endswith("roll_shock")]
                         + ["scenario-max/ALL/initial/worst_case", "scenario-es/ALL/initial/expected_shortfall",
                            "covariance-var/ALL/initial/var"])
def test_undampened_components_are_positively_homogeneous(convex_cases, cid):
    """f(t x) = t f(x), t >= 0. (Not the Deribit risk matrix: its extended-table dampeners are
    fixed amounts, so doubling a book can more than double its worst case.)"""
    case = convex_cases[cid]
    f = case.component.evaluate

    @FAST
    @given(sparse_book(case.book.size), st.floats(0.0, 50.0))
    def scaled(x, t):
        assert f(t * x) == pytest.approx(t * f(x), rel=1e-12, abs=1e-12)

    scaled()


def draw_book(names):
    return st.lists(st.tuples(st.sampled_from(names), qty.filter(lambda q: abs(q) > 1e-3)),
                    min_size=1, max_size=8, unique_by=lambda r: r[0])


@pytest.mark.parametrize("model", ["deribit-pm", "deribit-standard", "covariance-var"])
def test_margin_is_invariant_to_row_order(market, universe, model):
    """...and is finite, non-negative, with maintenance at most initial."""
    @BOOKS
    @given(draw_book(universe), st.randoms(use_true_random=False))
    def reorder(rows, rnd):
        shuffled = list(rows)
        rnd.shuffle(shuffled)
        a = marginopt.margin(Portfolio(dict(rows)), market, model)
        b = marginopt.margin(Portfolio(dict(shuffled)), market, model)
        assert np.isfinite(a.initial_margin_usd) and a.initial_margin_usd >= 0
        assert 0 <= a.maintenance_margin_usd <= a.initial_margin_usd * (1 + 1e-12)
        assert b.initial_margin_usd == pytest.approx(a.initial_margin_usd, rel=1e-12, abs=1e-9)
        assert b.maintenance_margin_usd == pytest.approx(a.maintenance_margin_usd, rel=1e-12, abs=1e-9)
        for pool, pm in a.by_underlying.items():
            assert b.by_underlying[pool].components == pytest.approx(pm.components, rel=1e-12, abs=1e-9)

    reorder()


@pytest.mark.parametrize("model", ["deribit-pm", "deribit-standard"])
def test_margin_is_invariant_to_splitting_rows(market, universe, model):
    @BOOKS
    @given(draw_book(universe), st.lists(st.floats(0.05, 1.0), min_size=1, max_size=4),
           st.randoms(use_true_random=False))
    def split(rows, fractions, rnd):
        pieces = []
        for name, q in rows:
            parts = [q * w / sum(fractions) for w in fractions]
            parts[-1] = q - sum(parts[:-1])
            pieces += [{"instrument": name, "quantity": p} for p in parts]
        rnd.shuffle(pieces)
        whole = marginopt.margin(Portfolio(dict(rows)), market, model)
        split_book = Portfolio.from_records(pieces)
        assert sorted(split_book.names) == sorted(n for n, _ in rows)
        again = marginopt.margin(split_book, market, model)
        assert again.initial_margin_usd == pytest.approx(whole.initial_margin_usd, rel=1e-9, abs=1e-9)
        assert again.maintenance_margin_usd == pytest.approx(whole.maintenance_margin_usd, rel=1e-9, abs=1e-9)

    split()


FUTURES = ["BTC-27SEP24", "BTC-27DEC24", "BTC-28MAR25", "BTC-PERPETUAL", "ETH-27DEC24", "ETH-PERPETUAL",
           "BTC_USDC-PERPETUAL", "ETH_USDC-PERPETUAL", "BTC_USDC"]


def test_future_scenarios_are_exact(market):
    inputs = market.pricing_inputs([parse_instrument(n) for n in FUTURES])

    @FAST
    @given(st.lists(st.floats(-0.99, 10.0, allow_nan=False), min_size=1, max_size=30))
    def exact(moves):
        m = np.array(moves)
        grid = ScenarioGrid(tuple(map(str, moves)), m, np.zeros(m.size), np.ones(m.size), np.zeros(m.size))
        pnl = revalue(inputs, grid)
        for j, inst in enumerate(inputs.instruments):
            if inputs.is_inverse[j]:
                want = 1.0 - 1.0 / (1.0 + m)  # coin P&L of 1 coin of an inverse future
            else:
                want = m * inputs.forward[j]   # USD P&L of 1 coin of a linear one (index for perp/spot)
            np.testing.assert_array_equal(pnl[:, j], want, err_msg=inst.name)

    exact()
