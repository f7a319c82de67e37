"""The batch job file: which accounts, which market, model and spec, where the results go.

Paths in the job are relative to the job file; paths in a manifest are relative to the manifest.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .._io import describe, parse_json, read_yaml, validation_message
from ..errors import InputError
from ..rebalance._spec import check_solver

#: an account name becomes a folder name: letters, digits, '.', '_', '-', not starting with '.'
ACCOUNT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
PORTFOLIO_SUFFIXES = (".csv", ".json")


class BatchJob(BaseModel):
    """A batch job (YAML). Exactly one of ``accounts_dir`` (every ``*.csv``/``*.json`` book in the
    folder, the account named after the file) and ``manifest`` (CSV: ``account``, ``portfolio``,
    optional ``spec`` file and ``spec_overrides`` JSON object per account)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    accounts_dir: Path | None = None
    #: glob of the books inside ``accounts_dir``
    pattern: str = "*"
    manifest: Path | None = None
    market: Path
    #: a raw Deribit book summary (``{"result": [...]}``) needs these two; a snapshot file has them
    valuation_time: datetime | None = None
    index_prices: dict[str, float] | None = None
    #: a shipped model name (``deribit-pm``) or a model YAML file
    model: str = "deribit-pm"
    #: inputs of the scenario-max/-es and covariance-var models
    scenarios: Path | None = None
    covariance: Path | None = None
    spec: Path | None = None
    output_dir: Path
    #: also write each account's report.html (charts take about a second per account)
    reports: bool = False
    solver: str | None = None
    #: accounts per Dask task (default: enough tasks for about four per worker, at most 25 each)
    chunk_size: int | None = Field(None, ge=1)
    #: one account's optimisation is stopped after this many seconds and reported as an error
    #: (in-process runs; the run goes on with the next account)
    account_time_limit_s: float = Field(600.0, gt=0, allow_inf_nan=False)
    #: the folder the relative paths are resolved against (the job file's folder)
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)

    @field_validator("solver", mode="after")
    @classmethod
    def _known_solver(cls, v: str | None) -> str | None:
        check_solver(v)
        return v

    @model_validator(mode="after")
    def _one_source(self) -> "BatchJob":
        if (self.accounts_dir is None) == (self.manifest is None):
            raise ValueError("give exactly one of 'accounts_dir' and 'manifest'")
        return self

    def path(self, p: Path | None) -> Path | None:
        if p is None:
            return None
        p = Path(p).expanduser()
        return Path(os.path.normpath(p if p.is_absolute() else self.base_dir / p))

    @property
    def model_ref(self) -> str | Path:
        """The model as ``load_model`` takes it: a shipped name, or a YAML path resolved here."""
        if self.model.lower().endswith((".yaml", ".yml")):
            return self.path(Path(self.model))  # type: ignore[return-value]
        return self.model

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, *, base_dir: str | Path | None = None,
                  source: str = "<memory>") -> "BatchJob":
        if not isinstance(data, Mapping):
            raise InputError("a batch job is a mapping of keys (accounts_dir or manifest, market, "
                             f"model, spec, output_dir), got {describe(data)}", source=source)
        try:
            return cls.model_validate({**dict(data), "base_dir": Path(base_dir or Path.cwd()).resolve()})
        except ValidationError as exc:
            msg, loc = validation_message(exc, cls)
            raise InputError(msg, source=source, field=loc) from None

    @classmethod
    def from_file(cls, path: str | Path) -> "BatchJob":
        data = read_yaml(path, "batch job file")
        path = Path(path)
        return cls.from_dict(data, base_dir=path.resolve().parent, source=str(path))


def load_job(job: BatchJob | str | Path | Mapping[str, Any]) -> BatchJob:
    if isinstance(job, BatchJob):
        return job
    if isinstance(job, Mapping):
        return BatchJob.from_dict(job)
    if not isinstance(job, (str, Path)):
        raise InputError(f"no batch job given: a YAML file path or a mapping, got {describe(job)}",
                         field="job")
    return BatchJob.from_file(job)


@dataclass(frozen=True)
class Account:
    """One account of a job. ``problem`` is set when the row itself is unusable (the account is
    then reported as an error without being run)."""

    name: str
    portfolio: Path | None
    spec_file: Path | None = None
    spec_overrides: str | None = None
    where: str = ""
    problem: str | None = None

    @property
    def folder_name(self) -> str | None:
        return self.name if ACCOUNT_NAME.match(self.name) else None


def _present(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and pd.isna(v)) and str(v).strip() != ""


def resolve_accounts(job: BatchJob) -> list[Account]:
    """The job's accounts in a stable order (file name, or manifest row order)."""
    accounts: list[Account] = []
    if job.accounts_dir is not None:
        folder = job.path(job.accounts_dir)
        assert folder is not None
        if not folder.is_dir():
            raise InputError("accounts_dir is not a folder", source=str(folder), field="accounts_dir")
        files = sorted(p for p in folder.glob(job.pattern)
                       if p.is_file() and p.suffix.lower() in PORTFOLIO_SUFFIXES)
        if not files:
            raise InputError(f"no portfolio file (*.csv, *.json) in {folder} matches pattern "
                             f"'{job.pattern}'", source=str(folder), field="pattern")
        for p in files:
            accounts.append(Account(p.stem, p, where=str(p)))
    else:
        manifest = job.path(job.manifest)
        assert manifest is not None
        if not manifest.exists():
            raise InputError("manifest file not found", source=str(manifest), field="manifest")
        if not manifest.is_file():
            raise InputError("manifest is a folder, not a file", source=str(manifest), field="manifest")
        try:
            frame = pd.read_csv(manifest, dtype=str, skipinitialspace=True, comment="#",
                                keep_default_na=False, encoding="utf-8-sig")
        except (ValueError, OSError, csv.Error) as exc:  # parser errors, binary files
            raise InputError(f"cannot read as CSV ({' '.join(str(exc).split())[:160]})",
                             source=str(manifest)) from None
        frame.columns = [str(c).strip().lower() for c in frame.columns]
        for col in ("account", "portfolio"):
            if col not in frame.columns:
                raise InputError(f"the manifest needs an '{col}' column", source=str(manifest),
                                 field=col)
        if frame.empty:
            raise InputError("the manifest lists no account", source=str(manifest))
        base = manifest.parent
        first_row: dict[str, int] = {}
        for i, row in enumerate(frame.to_dict(orient="records"), start=1):
            name = str(row.get("account") or "").strip()
            if name and name.lower() in first_row:
                raise InputError(f"account '{name}' is listed twice (rows {first_row[name.lower()]} "
                                 f"and {i}); give each account once", source=str(manifest),
                                 row=i, field="account", value=name)
            first_row.setdefault(name.lower(), i)
        for i, row in enumerate(frame.to_dict(orient="records"), start=1):
            where = f"{manifest}, row {i}"
            name = str(row.get("account") or "").strip()
            if not name:
                accounts.append(Account(f"<row {i}>", None, where=where,
                                        problem=f"{where}, field 'account': no account name"))
                continue
            port = str(row.get("portfolio") or "").strip()
            spec_file = str(row.get("spec") or "").strip()
            overrides = row.get("spec_overrides")
            accounts.append(Account(
                name, (base / port) if port else None,
                spec_file=(base / spec_file) if spec_file else None,
                spec_overrides=str(overrides) if _present(overrides) else None, where=where,
                problem=None if port else f"{where}, field 'portfolio': no portfolio file"))
    seen: dict[str, str] = {}
    for a in accounts:   # two books of the same name (desk_a.csv and desk_a.json)
        if a.name.lower() in seen:
            raise InputError(f"account '{a.name}' is given twice ({seen[a.name.lower()]} and "
                             f"{a.where}); give each account once", field="account", value=a.name)
        seen[a.name.lower()] = a.where
    out = []
    for a in accounts:
        if a.problem is None and a.folder_name is None:
            a = Account(a.name, a.portfolio, a.spec_file, a.spec_overrides, a.where,
                        f"{a.where}: account name '{a.name}' cannot name a folder (use letters, "
                        "digits, '.', '_' and '-')")
        out.append(a)
    return out


def parse_overrides(text: str, where: str) -> dict[str, Any]:
    try:
        data = parse_json(text, where)
    except InputError as exc:
        raise InputError(f"spec_overrides is {exc.message}", source=where,
                         field="spec_overrides") from None
    if not isinstance(data, dict):
        raise InputError(f"spec_overrides must be a JSON object of spec keys, got {describe(data)}",
                         source=where, field="spec_overrides")
    return data
