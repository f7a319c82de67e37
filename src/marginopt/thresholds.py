"""Plausibility thresholds for inputs, in one place.

Every number a loader accepts is checked against these before any margin model or solver sees it.
A value past an ``error`` threshold cannot be right and is a typed ``InvalidValue`` naming the
file, row and field; a value past a ``warning`` threshold could be right and is recorded as a
warning on the object (``MarketSnapshot.warnings``) and printed by the command line.
The README's "Input checks" table lists them.
"""

from __future__ import annotations

#: Largest absolute position or trade in one instrument, in coin. Ten billion coin is beyond any
#: exchange's open interest for any underlying (all BTC ever to exist is 21 million); sizes like
#: 1e20 are typos or unit errors, and would only reach a solver as numerically meaningless
#: coefficients.
MAX_ABS_QUANTITY = 1e10

#: Largest price a snapshot may carry (mark, bid, ask, forward, index), USD per coin or coin per
#: option: a billion USD per coin.
MAX_PRICE = 1e9

#: Largest open interest or volume (coin, or USD for inverse futures and perpetuals).
MAX_SIZE = 1e15

#: Mark implied volatility above which a warning is recorded, in percent (Deribit's ``mark_iv``).
MAX_MARK_IV_PCT = 1000.0

#: Distance between the valuation time and the snapshot rows' own ``timestamp`` /
#: ``creation_timestamp`` (Deribit's, milliseconds since 1970) above which the snapshot is
#: refused (seconds: one day) ...
MAX_TIMESTAMP_GAP_SECONDS = 86_400.0
#: ... or a warning is recorded (seconds: one hour).
WARN_TIMESTAMP_GAP_SECONDS = 3_600.0

#: Deribit lists daily expiries: a snapshot whose nearest listed expiry is further than this from
#: the valuation time (days) probably does not belong to that time (a warning).
WARN_NEAREST_EXPIRY_DAYS = 370.0

#: Largest lot size in coin (lots must also be above zero).
MAX_LOT_SIZE = 1e6

#: Largest value of a user scenario P&L matrix, USD per coin held (scenario-max/-es): a trillion
#: USD per coin is past any move of any underlying; larger values only overflow the margin.
MAX_SCENARIO_PNL_USD = 1e12

#: Largest entry of a user covariance matrix (covariance-var; variances of relative moves and
#: vol points are far below this).
MAX_COVARIANCE_ENTRY = 1e6
