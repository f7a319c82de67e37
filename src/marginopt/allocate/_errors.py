"""Errors of a desk allocation, each an ``InputError`` naming the account and field at fault."""

from __future__ import annotations

from ..errors import InputError


class VenueMismatch(InputError):
    """Something of one venue used with another: a model, a snapshot, a move."""


class CrossVenueMove(VenueMismatch):
    """A move of positions (or a collateral transfer) between accounts of different venues, or of
    different main accounts of one venue: exchanges move positions only between subaccounts of
    one main account."""


class WrongVenueSnapshot(VenueMismatch):
    """A market snapshot of another venue than the account's, or accounts of one venue priced on
    different snapshots (a move is priced at one mark)."""


__all__ = ["CrossVenueMove", "VenueMismatch", "WrongVenueSnapshot"]
