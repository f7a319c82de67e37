"""Every failure marginopt reports, each naming what went wrong and what to do next.

Input errors carry the source (file), the row and the field, so a desk can fix the file
without reading a traceback. The CLI maps each family to an exit code (see ``cli``).
"""

from __future__ import annotations

from typing import Any


class MarginoptError(Exception):
    """Base of every error marginopt raises on purpose."""

    exit_code: int = 1


class InputError(MarginoptError, ValueError):
    """Bad input: a file, row or field that cannot be used as given."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        row: int | str | None = None,
        field: str | None = None,
        value: Any = None,
    ) -> None:
        self.source = source
        self.row = row
        self.field = field
        self.value = value
        where = []
        if source is not None:
            where.append(str(source))
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        self.message = message
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class MalformedInstrumentName(InputError):
    """An instrument name that is not in Deribit's naming scheme."""


class UnknownInstrument(InputError):
    """A position or trade in an instrument the market snapshot does not list."""


class MissingMarketData(InputError):
    """A held instrument whose mark, volatility or forward is missing from the snapshot."""


class ExpiredInstrument(InputError):
    """An instrument whose expiry is at or before the valuation time."""


class InvalidValue(InputError):
    """A number that is NaN, infinite, negative where it must not be, or not a number."""


class UnsupportedInstrument(InputError):
    """An instrument the margin model cannot margin: its kind, settlement or underlying is outside
    what the model covers, or the model's own data (a scenario matrix) has no entry for it."""


class UnsupportedCurrency(UnsupportedInstrument):
    """A position in a currency (underlying or settlement) the margin model has no parameters for."""


class ModelError(InputError):
    """A margin-model file that does not validate, or a model name that does not exist."""


class SpecError(InputError):
    """A rebalance spec that does not validate."""


class OutputError(InputError):
    """A place to write results that cannot be written: a file where a folder belongs, a folder
    without write permission, a full disk. Named with the path; nothing is half written."""


class OptimizationError(MarginoptError):
    """The optimizer could not produce an acceptable proposal."""


class Infeasible(OptimizationError):
    """No trade set satisfies every limit.

    ``diagnosis`` maps each limit that must move to the amount it must move by (in the limit's own
    units), found by re-solving with every limit softened by a penalised slack.
    """

    exit_code = 3

    def __init__(self, message: str, diagnosis: dict[str, float] | None = None, *,
                 attempts: list[tuple[str, str]] | None = None) -> None:
        self.diagnosis = dict(diagnosis or {})
        self.attempts = list(attempts or [])
        if self.diagnosis:
            moves = "; ".join(f"{k} by {v:+.6g}" for k, v in self.diagnosis.items())
            message = f"{message} Limits that must move: {moves}."
        super().__init__(message)


class Unbounded(OptimizationError):
    """The problem is unbounded: a trade bound or cost is missing from the spec."""

    exit_code = 4


class SolverFailed(OptimizationError):
    """Every solver in the chain failed; ``attempts`` records what each one said."""

    exit_code = 4

    def __init__(self, message: str, attempts: list[tuple[str, str]] | None = None) -> None:
        self.attempts = list(attempts or [])
        if self.attempts:
            message += " Tried: " + "; ".join(f"{s}: {why}" for s, why in self.attempts) + "."
        super().__init__(message)


class VerificationFailed(SolverFailed):
    """Solvers answered, but every answer failed the verifier, and no repair passed it either.

    ``attempts`` records each answer tried (solver, stage, repair) and what failed in it; nothing
    that fails verification is ever returned as a proposal.
    """


class AccountFailed(MarginoptError):
    """A batch account whose optimisation did not come back. Never raised out of a run: it is the
    ``error_class`` of that account's summary row, and the run goes on with the other accounts."""


class AccountCrashed(AccountFailed):
    """The process optimising the account died (a native crash in a solver or library, out of
    memory); the next run tries the account again."""


class AccountTimedOut(AccountFailed):
    """The account's optimisation ran past the job's ``account_time_limit_s`` and was stopped;
    the next run tries it again."""


class CredentialsError(InputError):
    """Exchange credentials that are missing, malformed, or kept in a file others can read. The
    message names the variable or file, never the credential itself."""


class SnapshotError(InputError):
    """A fetched snapshot folder that is incomplete or unreadable (no manifest, a missing file)."""


class ExchangeError(MarginoptError):
    """An exchange call that failed: names the venue and the endpoint, never a credential.
    Exit code 2, like bad input: the command did not get what it needs to compute."""

    exit_code = 2

    def __init__(self, message: str, *, venue: str, endpoint: str, attempts: int = 1) -> None:
        self.venue = venue
        self.endpoint = endpoint
        self.attempts = attempts
        self.message = message
        tries = f" (after {attempts} attempts)" if attempts > 1 else ""
        super().__init__(f"{venue} {endpoint}: {message}{tries}")


class ExchangeUnavailable(ExchangeError):
    """The exchange could not be reached or did not answer in time: a retry later may work."""


class ExchangeNetworkError(ExchangeUnavailable):
    """The connection failed (refused, reset, closed mid-reply)."""


class ExchangeTimeout(ExchangeUnavailable):
    """No reply within the time-out."""


class ExchangeServerError(ExchangeUnavailable):
    """The exchange answered with a server error (HTTP 5xx) on every attempt."""

    def __init__(self, message: str, *, status: int, **kwargs: Any) -> None:
        self.status = status
        super().__init__(message, **kwargs)


class ExchangeRateLimited(ExchangeUnavailable):
    """The exchange kept refusing for too many requests (HTTP 429), Retry-After respected."""

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kwargs: Any) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message, **kwargs)


class ExchangeAuthError(ExchangeError):
    """The exchange refused the credentials or the session token (after one fresh login)."""


class ExchangeRejected(ExchangeError):
    """The exchange answered with an error of its own (bad parameter, not allowed): ``code`` and
    the exchange's message are kept."""

    def __init__(self, message: str, *, code: Any = None, **kwargs: Any) -> None:
        self.code = code
        super().__init__(message, **kwargs)


class MalformedReply(ExchangeError):
    """A reply that is not the JSON the endpoint documents (not JSON, no result, wrong shape)."""


class PartialData(ExchangeError):
    """A reply that parses but lacks what a snapshot needs (no instruments for a currency, no
    index price for an underlying held, a position in an instrument the market does not list)."""
