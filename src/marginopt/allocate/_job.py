"""The allocation job file (YAML): the desk's venues and their snapshots, its accounts, and the
desk's rules. Paths are relative to the job file.

```yaml
venues:
  deribit: {market: snapshot.json}
accounts:
  - {name: pm-sub, venue: deribit, main_account: desk, model: deribit-pm, portfolio: pm.csv,
     spec: pm_spec.yaml, equity: {BTC: 3, USDC: 150000}, buffer_usd: 20000}
desk:
  limits: {BTC: {delta: [-5, 5]}}
  moves: {allowed: true, fee_rate: 0}
  transfers: {allowed: true}
output_dir: out
```
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .._io import describe, parse_json, read_bytes, read_yaml, validation_message
from ..errors import InputError
from ..market import MarketSnapshot
from ..margins import load_model
from ._accounts import Account, DeskRules, model_venue
from ._errors import VenueMismatch, WrongVenueSnapshot

ACCOUNT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


class VenueEntry(BaseModel):
    """A venue's market snapshot (shared by its accounts: moves are priced at its marks)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    market: Path
    #: a raw Deribit book summary (``{"result": [...]}``) needs these; a snapshot file has them
    valuation_time: datetime | None = None
    index_prices: dict[str, float] | None = None


class AccountEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    #: the venue (default: the model's: deribit-pm and deribit-standard are Deribit's, derive-pm2
    #: Derive's); a house model needs it
    venue: str | None = None
    #: subaccounts of one main account (of one venue) may move positions and collateral
    main_account: str | None = None
    model: str = "deribit-pm"
    portfolio: Path
    #: the account's own snapshot (default: its venue's)
    market: Path | None = None
    #: a rebalance spec file or the spec itself
    spec: Path | dict[str, Any] | None = None
    #: collateral per currency (a bare number: USD)
    equity: dict[str, float] | float | None = None
    buffer_usd: float = Field(0.0, ge=0, allow_inf_nan=False)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not ACCOUNT_NAME.match(v):
            raise ValueError(f"account name {v!r}: letters, digits, '.', '_', '-' (not starting with '.')")
        return v


class AllocationJobFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    venues: dict[str, VenueEntry] = Field(default_factory=dict)
    accounts: list[AccountEntry] = Field(min_length=1)
    desk: DeskRules = DeskRules()
    output_dir: Path | None = None

    @field_validator("venues", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return {str(k).strip().lower(): x for k, x in v.items()} if isinstance(v, Mapping) else v


@dataclass(frozen=True)
class AllocationJob:
    """A loaded job: accounts ready to allocate, the desk's rules, where results go."""

    accounts: list[Account]
    rules: DeskRules
    output_dir: Path | None
    source: str


def _resolve(base: Path, p: Path) -> Path:
    p = Path(p).expanduser()
    return Path(os.path.normpath(p if p.is_absolute() else base / p))


def _snapshot(path: Path, entry: VenueEntry | None) -> tuple[MarketSnapshot, str | None]:
    """The snapshot, and the venue it declares (a top-level ``venue`` key), if any."""
    data = parse_json(read_bytes(path, "market snapshot"), str(path))
    declared = data.get("venue") if isinstance(data, Mapping) else None
    kwargs: dict[str, Any] = {}
    if entry is not None and entry.valuation_time is not None:
        kwargs["valuation_time"] = entry.valuation_time
    if entry is not None and entry.index_prices is not None:
        kwargs["index_prices"] = entry.index_prices
    if isinstance(data, Mapping) and "venue" in data:
        data = {k: v for k, v in data.items() if k != "venue"}
    snap = MarketSnapshot.from_dict(data, source=str(path), **kwargs)
    return snap, (str(declared).strip().lower() if declared is not None else None)


def load_allocation_job(job: str | Path | Mapping[str, Any], *, base_dir: str | Path | None = None) -> AllocationJob:
    """Validate a job (a YAML file or a mapping) and load every account it names."""
    if isinstance(job, Mapping):
        data, source, base = dict(job), "<memory>", Path(base_dir or Path.cwd()).resolve()
    else:
        data = read_yaml(job, "allocation job file")
        source, base = str(job), Path(job).resolve().parent
    if not isinstance(data, Mapping):
        raise InputError(f"an allocation job is a mapping (venues, accounts, desk), got {describe(data)}",
                         source=source)
    try:
        parsed = AllocationJobFile.model_validate(data)
    except ValidationError as exc:
        msg, loc = validation_message(exc, AllocationJobFile)
        raise InputError(msg, source=source, field=loc) from None
    snapshots: dict[str, tuple[MarketSnapshot, str | None]] = {}
    for venue, entry in parsed.venues.items():
        snap, declared = _snapshot(_resolve(base, entry.market), entry)
        if declared is not None and declared != venue:
            raise WrongVenueSnapshot(f"the snapshot is {declared}'s, given for venue {venue}",
                                     source=snap.source, field=f"venues.{venue}.market")
        snapshots[venue] = (snap, venue)
    accounts: list[Account] = []
    for i, entry in enumerate(parsed.accounts):
        model: Any = entry.model
        if entry.model.lower().endswith((".yaml", ".yml")):
            model = _resolve(base, Path(entry.model))
        model = load_model(model)
        venue = (entry.venue or model_venue(model) or "").strip().lower()
        if not venue:
            raise VenueMismatch(f"model {model.name} is no exchange's: give the account's venue",
                                source=source, row=entry.name, field=f"accounts[{i}].venue")
        if entry.market is not None:
            snap, declared = _snapshot(_resolve(base, entry.market), parsed.venues.get(venue))
        elif venue is not None and venue in snapshots:
            snap, declared = snapshots[venue]
        else:
            raise InputError(f"account {entry.name} has no market: give its venue's snapshot under "
                             f"venues ({', '.join(parsed.venues) or 'none given'}) or its own market",
                             source=source, row=entry.name, field=f"accounts[{i}].market")
        spec: Any = entry.spec
        if isinstance(spec, Path):
            spec = _resolve(base, spec)
        accounts.append(Account.build(
            entry.name, model=model, portfolio=_resolve(base, entry.portfolio), market=snap, venue=venue,
            spec=spec, equity=entry.equity, buffer_usd=entry.buffer_usd, main_account=entry.main_account,
            market_venue=declared))
    out = _resolve(base, parsed.output_dir) if parsed.output_dir is not None else None
    return AllocationJob(accounts, parsed.desk, out, source)
