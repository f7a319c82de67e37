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
