"""Desk allocation: minimise a desk's total initial margin across its accounts and venues at once
(trades in each account, moves of positions and collateral between subaccounts of one main
account), within every account's limits, the desk's limits on aggregate greeks and each
account's equity. Every answer is verified account by account and recomputed by each account's
calculator. The package is callable: ``marginopt.allocate(accounts, rules)`` is ``allocate``."""

import sys as _sys
import types as _types

from ._accounts import MODEL_VENUES, Account, DeskRules, MovePolicy, TransferPolicy, load_rules
from ._allocate import Allocator, allocate
from ._errors import CrossVenueMove, VenueMismatch, WrongVenueSnapshot
from ._result import (AccountAllocation, Allocation, AllocationStatus, BindingLimit, Move, Transfer)

__all__ = ["Account", "AccountAllocation", "Allocation", "AllocationStatus", "Allocator", "BindingLimit",
           "CrossVenueMove", "DeskRules", "MODEL_VENUES", "Move", "MovePolicy", "Transfer", "TransferPolicy",
           "VenueMismatch", "WrongVenueSnapshot", "allocate", "load_rules"]


class _CallableModule(_types.ModuleType):
    """``marginopt.allocate(...)`` calls ``allocate`` while ``marginopt.allocate`` stays this
    package (a function of the same name would shadow it, as ``marginopt.margin`` once did)."""

    def __call__(self, *args, **kwargs) -> Allocation:
        return allocate(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
