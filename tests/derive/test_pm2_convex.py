"""cvxpy builders of the convex PM2 terms equal the numpy terms at x0, on every golden case."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

from marginopt.derive import (
    CONVEXITY,
    base_contingency,
    forward_contingency,
    mark_to_market,
    option_contingency,
    perp_contingency,
    term_is_convex,
    worst_losses,
)
from marginopt.derive._convex import (
    NotConvexError,
    cvx_base_contingency,
    cvx_forward_contingency,
    cvx_mark_to_market,
    cvx_option_contingency,
    cvx_perp_contingency,
    cvx_worst_loss,
)

from ._cases import CASE_PARAMS, book_size, pick
from .test_pm2_golden import evaluated


def _pairs(arrays):
    """(term, cvxpy builder, numpy value) for every term CONVEXITY calls convex."""
    o = arrays.params.other
    x0 = arrays.x0
    mm_hc = arrays.collateral_mm_haircut
    im_hc = mm_hc + arrays.collateral_im_haircut
    losses = worst_losses(x0, arrays)
    return [
        ("mtm", lambda x: cvx_mark_to_market(x, arrays), mark_to_market(x0, arrays)),
        ("worst_regular_loss", lambda x: cvx_worst_loss(x, arrays, "regular"), losses["regular"]),
        ("worst_tail_loss", lambda x: cvx_worst_loss(x, arrays, "tail"), losses["tail"]),
        ("forward_contingency", lambda x: cvx_forward_contingency(x, arrays),
         forward_contingency(x0, arrays)),
        ("perp_contingency", lambda x: cvx_perp_contingency(x, arrays, o.mm_perp_percent),
         perp_contingency(x0, arrays, o.mm_perp_percent)),
        ("perp_contingency", lambda x: cvx_perp_contingency(
            x, arrays, o.mm_perp_percent + o.im_perp_percent),
         perp_contingency(x0, arrays, o.mm_perp_percent + o.im_perp_percent)),
        ("option_contingency", lambda x: cvx_option_contingency(x, arrays, o.mm_option_percent),
         option_contingency(x0, arrays, o.mm_option_percent)),
        ("option_contingency", lambda x: cvx_option_contingency(
            x, arrays, o.mm_option_percent + o.im_option_percent),
         option_contingency(x0, arrays, o.mm_option_percent + o.im_option_percent)),
        ("base_contingency", lambda x: cvx_base_contingency(x, arrays, mm_hc),
         base_contingency(x0, arrays, mm_hc)),
        ("base_contingency", lambda x: cvx_base_contingency(x, arrays, im_hc),
         base_contingency(x0, arrays, im_hc)),
    ]


def test_every_convex_term_has_a_builder():
    covered = {"mtm", "worst_regular_loss", "worst_tail_loss", "forward_contingency",
               "perp_contingency", "option_contingency", "base_contingency"}
    assert covered == {t for t, convex in CONVEXITY.items() if convex}


@pytest.mark.parametrize("path", CASE_PARAMS)
def test_cvxpy_terms_match_numpy_at_x0(path):
    _, arrays, _, _ = evaluated(path)
    x = cp.Variable(arrays.n_columns)
    x.value = np.array(arrays.x0)
    for term, build, expected in _pairs(arrays):
        if not term_is_convex(term, arrays):
            with pytest.raises(NotConvexError):
                build(x)
            continue
        expr = build(x)
        assert expr.is_convex(), term
        got = float(expr.value)
        tol = 1e-9 * max(abs(expected), 1e-9) if abs(expected) > 1e-9 else 1e-9
        assert abs(got - expected) <= tol, f"{term}: cvxpy {got!r} vs numpy {expected!r}"


def test_worst_regular_loss_is_minimised_by_an_lp():
    """The convex form is usable: minimise the regular-scenario loss over the option amounts of
    a golden account within +/- 1 contract of the current book; never worse than x0."""
    (path,) = pick(lambda p: book_size(p)[0] >= 10, 1, "a book of ten or more options")
    _, arrays, _, _ = evaluated(path)
    t = cp.Variable(arrays.n_columns)
    x = arrays.x0 + t
    fixed = np.arange(arrays.n_columns) >= arrays.n_options
    problem = cp.Problem(cp.Minimize(cvx_worst_loss(x, arrays, "regular")),
                         [cp.abs(t) <= 1.0, t[fixed] == 0])
    problem.solve()
    assert problem.status == cp.OPTIMAL
    best = worst_losses(arrays.x0 + t.value, arrays)["regular"]
    assert best == pytest.approx(problem.value, rel=1e-6, abs=1e-6)
    assert best <= worst_losses(arrays.x0, arrays)["regular"] + 1e-6
