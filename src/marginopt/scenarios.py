"""Scenario engine: full revaluation of every instrument under a grid of market scenarios.

A scenario moves every forward and the index of an underlying by the same relative ``price_move``
and puts option volatilities in a ``vol_state`` (-1 down, 0 unchanged, +1 up) whose size depends on
each option's time to expiry. The result is the S x N matrix of per-unit P&L in each instrument's
margin currency: coin for inverse contracts, USD for linear ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .market import PricingInputs
from .pricing import black76_price

#: Scenario blocks are sized so that one block's temporaries stay near this many elements:
#: 64k float64 (512 KB) arrays stay in L2 cache; 4M-element blocks ran 1.7x slower on the
#: 2,000 x 10,000 benchmark (benchmarks/bench_margin.py).
_BLOCK_ELEMENTS = 65_536


@dataclass(frozen=True, slots=True)
class VolShock:
    """Volatility shock scaled by time to expiry (Deribit/Paradex/Derive form):
    ``up = max(sigma * (1 + range_up * (term/DTE)**p), min_vol_for_shock_up)``,
    ``down = max(sigma * (1 - range_down * (term/DTE)**p), 0)``, with ``p`` the short-term power
    below ``term`` days and the long-term power from it on; DTE is floored at ``dte_floor_days``."""

    range_up: float
    range_down: float
    short_term_power: float
    long_term_power: float
    min_vol_for_shock_up: float = 0.0
    term_days: float = 30.0
    dte_floor_days: float = 1.0

    def shocked(self, sigma: np.ndarray, t: np.ndarray) -> np.ndarray:
        """(3, N) volatilities for the down, unchanged and up states."""
        dte = np.maximum(t * 365.0, self.dte_floor_days)
        power = np.where(dte < self.term_days, self.short_term_power, self.long_term_power)
        scale = (self.term_days / dte) ** power
        up = np.maximum(sigma * (1.0 + self.range_up * scale), self.min_vol_for_shock_up)
        down = np.maximum(sigma * (1.0 - self.range_down * scale), 0.0)
        return np.stack([down, sigma, up])


@dataclass(frozen=True)
class ScenarioGrid:
    """Scenarios of one margin pool: labels, moves, vol states, loss weights and dampeners."""

    labels: tuple[str, ...]
    price_move: np.ndarray
    vol_state: np.ndarray
    weight: np.ndarray
    dampener: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.labels)
        for name in ("price_move", "vol_state", "weight", "dampener"):
            arr = np.asarray(getattr(self, name), dtype=float if name != "vol_state" else np.int8)
            if arr.shape != (n,):
                raise ValueError(f"{name} must have one entry per scenario ({n})")
            object.__setattr__(self, name, arr)
        if np.any(self.price_move <= -1.0):
            raise ValueError("a price move must be above -100%")

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def concat(cls, *grids: "ScenarioGrid") -> "ScenarioGrid":
        return cls(
            tuple(l for g in grids for l in g.labels),
            np.concatenate([g.price_move for g in grids]),
            np.concatenate([g.vol_state for g in grids]),
            np.concatenate([g.weight for g in grids]),
            np.concatenate([g.dampener for g in grids]),
        )

    @classmethod
    def price_vol_grid(cls, moves: np.ndarray, vol_states: tuple[int, ...] = (-1, 0, 1)) -> "ScenarioGrid":
        """Every price move under every vol state, weight 1 and no dampener."""
        moves = np.asarray(moves, dtype=float)
        m = np.repeat(moves, len(vol_states))
        v = np.tile(np.asarray(vol_states, dtype=np.int8), len(moves))
        names = {-1: "vol down", 0: "vol flat", 1: "vol up"}
        labels = tuple(f"{mv:+.2%} {names[int(vs)]}" for mv, vs in zip(m, v))
        return cls(labels, m, v, np.ones_like(m), np.zeros_like(m))


def revalue(inputs: PricingInputs, grid: ScenarioGrid, vol_shock: VolShock | None = None) -> np.ndarray:
    """S x N per-unit P&L by full revaluation, in coin for inverse and USD for linear contracts.

    Options are repriced with Black-76 at the moved forward and shocked vol (time to expiry
    unchanged); inverse option P&L is the change of the coin value ``V/F``. An inverse future of
    1 coin earns ``1 - 1/(1+m)`` coin; a linear one ``F*m`` USD; spot ``S*m`` USD.
    """
    moves = grid.price_move
    n_s, n = len(moves), len(inputs.forward)
    pnl = np.empty((n_s, n))
    lin = ~inputs.is_option
    if lin.any():
        inv = inputs.is_inverse[lin]
        level = np.where(inputs.is_spot[lin], inputs.index[lin], inputs.forward[lin])
        coin = 1.0 - 1.0 / (1.0 + moves)
        pnl[:, lin] = np.where(inv[None, :], coin[:, None], moves[:, None] * level[None, :])
    opt = np.flatnonzero(inputs.is_option)
    if opt.size:
        f0, k, t = inputs.forward[opt], inputs.strike[opt], inputs.t[opt]
        sigma, calls, inv = inputs.sigma[opt], inputs.is_call[opt], inputs.is_inverse[opt]
        if vol_shock is None:
            if np.any(grid.vol_state != 0):
                raise ValueError("the grid has vol shocks but no VolShock was given")
            vols = sigma[None, :].repeat(3, axis=0)
        else:
            vols = vol_shock.shocked(sigma, t)
        v0 = black76_price(f0, k, t, sigma, calls)
        base = np.where(inv, v0 / f0, v0)
        block = max(1, _BLOCK_ELEMENTS // max(opt.size, 1))
        for start in range(0, n_s, block):  # blocks bound memory; each block is vectorised
            sl = slice(start, min(start + block, n_s))
            f1 = f0[None, :] * (1.0 + moves[sl, None])
            v1 = black76_price(f1, k[None, :], t[None, :], vols[grid.vol_state[sl] + 1], calls[None, :])
            pnl[sl, opt] = np.where(inv[None, :], v1 / f1, v1) - base[None, :]
    return pnl


def delta_in_margin_currency(inputs: PricingInputs) -> np.ndarray:
    """d(P&L)/d(relative move) at zero per unit: coin exposure for inverse contracts
    (``delta - V/F`` for options, 1 for futures), USD exposure for linear ones."""
    g = inputs.greeks()
    level = np.where(inputs.is_spot, inputs.index, inputs.forward)
    return np.where(inputs.is_inverse, g.delta, np.where(inputs.is_option, g.delta * inputs.forward, level))
