"""Venues: where contracts trade, and the conventions that come with it (names both ways, expiry
hour, amounts, open-interest units, API fields). See ``_base`` for the interface; each shipped
venue is one module that registers itself, imported below (one line per venue)."""

from ._base import (MARKET_FIELDS, Venue, naming_venue, register_venue, registry_generation,
                    unregister_venue, venue, venues)
from . import deribit, derive, user  # noqa: E402,F401  (each registers itself)

__all__ = ["MARKET_FIELDS", "Venue", "naming_venue", "register_venue", "registry_generation",
           "unregister_venue", "venue",
           "venues"]
