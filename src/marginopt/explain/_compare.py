"""Side by side: the same book under every model that applies, and what switching would save."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ..errors import InputError, ModelError, UnsupportedInstrument
from ..margins import MarginModel, load_model, margin, model_names
from ..market import load_market
from ..portfolio import load_portfolio
from ._common import BookLike, MarketLike, ModelLike

#: the mode savings are measured from when none is named: Deribit accounts start in standard margin
DEFAULT_CURRENT = "deribit-standard"


@dataclass(frozen=True)
class ModelMargin:
    """One model's margin of the book, or why the model does not apply to it."""

    model: str
    applies: bool
    initial_margin_usd: float | None
    maintenance_margin_usd: float | None
    #: initial margin saved by switching from the current model to this one (USD; negative: costs)
    saving_usd: float | None
    reason: str = ""


@dataclass(frozen=True)
class Comparison:
    """The book's margin under each model; ``current`` is the mode the account is in."""

    current: str | None
    models: tuple[ModelMargin, ...]

    @property
    def best(self) -> ModelMargin | None:
        applying = [m for m in self.models if m.applies]
        return min(applying, key=lambda m: m.initial_margin_usd) if applying else None

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(m) for m in self.models],
                            columns=["model", "applies", "initial_margin_usd", "maintenance_margin_usd",
                                     "saving_usd", "reason"])

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {"current": self.current, "best": best.model if best else None,
                "models": [asdict(m) for m in self.models]}

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)


def compare(book: BookLike, market: MarketLike, models: Sequence[ModelLike] | None = None, *,
            current: str | None = None, scenarios: str | Path | None = None,
            covariance: str | Path | None = None) -> Comparison:
    """The book's initial and maintenance margin under each of ``models`` (default: every shipped
    model). A model that cannot margin the book (a currency or settlement it does not cover, a
    scenario matrix it needs and was not given) is listed with the reason. Savings are against
    ``current`` (default: ``deribit-standard`` if it applies, else the first model that does)."""
    portfolio = load_portfolio(book)
    snap = load_market(market)
    rows: list[tuple[str, float | None, float | None, str]] = []
    for spec in (list(models) if models is not None else model_names()):
        label = spec.name if isinstance(spec, MarginModel) else str(spec)
        try:
            rules = load_model(spec, scenario_matrix=scenarios, covariance=covariance)
            label = rules.name
        except ModelError as exc:
            if models is not None and "needs a scenario P&L matrix" not in exc.message:
                raise  # a model the user named must load; a shipped one may need inputs
            rows.append((label, None, None, exc.message))
            continue
        try:
            result = margin(portfolio, snap, rules)
        except (UnsupportedInstrument, ModelError) as exc:
            rows.append((label, None, None, str(exc)))
            continue
        except InputError:
            raise  # the book or the market is at fault, not the model: say so
        rows.append((label, result.initial_margin_usd, result.maintenance_margin_usd, ""))
    applying = [r for r in rows if r[1] is not None]
    names = [r[0] for r in rows]
    if current is not None and current not in names:
        raise ModelError(f"current model {current} is not among the models compared "
                         f"({', '.join(names)})", field="current", value=current)
    if current is not None and current not in [r[0] for r in applying]:
        raise ModelError(f"current model {current} does not apply to this book: "
                         f"{next(r[3] for r in rows if r[0] == current)}", field="current", value=current)
    if current is None:  # an account starts in standard margin: what would the others save?
        first = [r[0] for r in applying]
        current = DEFAULT_CURRENT if DEFAULT_CURRENT in first else (first[0] if first else None)
    base = current
    base_im = next((r[1] for r in applying if r[0] == base), None)
    out = tuple(ModelMargin(name, im is not None, im, mm,
                            None if im is None or base_im is None else base_im - im, reason)
                for name, im, mm, reason in rows)
    return Comparison(base, out)


__all__ = ["Comparison", "ModelMargin", "compare"]
