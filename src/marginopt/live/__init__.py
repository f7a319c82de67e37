"""Live: pull the market and the account from an exchange, reconcile marginopt's margin with the
exchange's own, and re-optimise on every new snapshot.

- ``fetch(out, ["BTC", "ETH"], testnet=True)`` (``venue="derive"`` for Derive): a snapshot folder (market, positions, open
  orders, account summary, Deribit's ``pme/simulate``), written atomically;
- ``reconcile(snapshot)``: marginopt's IM and MM against the exchange's, component by component;
- ``Watcher(model, spec).run(folder_source(...) | exchange_source(...))``: one warm Rebalancer,
  a proposal whenever the trades change.

The exchange clients (``DeribitClient``, ``DeriveClient``, over ccxt) are imported on first use: ccxt takes a second
or more to import, and reading snapshots does not need it.
"""

from typing import Any

from ._credentials import ENV_VARS, Credentials, load_credentials
from ._reconcile import NOT_MODELLED, ReconLine, Reconciliation, reconcile
from ._retry import RetryPolicy
from ._snapshot import (FILES, Snapshot, fetch, fetch_data, is_snapshot, list_snapshots,
                        load_snapshot, margin_model_of, write_snapshot)
from ._watch import CycleReport, Tick, Watcher, exchange_source, folder_source

__all__ = ["Credentials", "CycleReport", "DeribitClient", "DeriveClient", "ENV_VARS", "FILES", "NOT_MODELLED",
           "ReconLine", "Reconciliation", "RetryPolicy", "Snapshot", "Tick", "Watcher",
           "exchange_source", "fetch", "fetch_data", "folder_source", "is_snapshot",
           "list_snapshots", "load_credentials", "load_snapshot", "margin_model_of", "reconcile",
           "write_snapshot"]


def __getattr__(name: str) -> Any:
    if name in ("DeribitClient", "DERIBIT_URLS"):
        from . import _deribit
        return getattr(_deribit, name)
    if name in ("DeriveClient", "DERIVE_URLS"):
        from . import _derive
        return getattr(_derive, name)
    raise AttributeError(f"module 'marginopt.live' has no attribute {name!r}")
