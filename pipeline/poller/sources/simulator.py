"""A simulated PLC: realistic waveforms for the demo plant, computed with numpy per group.

Waves (``sim = { wave = ..., min, max, period_s, noise, step, bad_rate }``):

* ``sine``: between min and max with the given period, plus gaussian ``noise``;
* ``ramp``: a sawtooth from min to max over ``period_s``, then back to min;
* ``counter``: adds ``step`` every poll, wraps from max back to min (production counts);
* ``square``: min for half the period, max for the other half (a bool toggling);
* ``walk``: a bounded random walk (``step`` is the standard deviation per poll);
* ``constant``: min, plus noise.

Integer types are rounded, bools are 0/1. ``bad_rate`` is the chance per poll that a tag
reads BAD (a loose wire, a sensor out of range), so the status page and the database show
what a bad value looks like.
"""

from __future__ import annotations

import time

import numpy as np

from shm.layout import QUALITY_BAD, QUALITY_GOOD

from ..config import PlcConfig, SimSpec
from .base import Reading


class _SimGroup:
    def __init__(self, specs: list[SimSpec], types: list[str], rng: np.random.Generator) -> None:
        n = len(specs)
        self.rng = rng
        f = lambda name: np.array([getattr(s, name) for s in specs], dtype=np.float64)  # noqa: E731
        self.lo, self.hi, self.period, self.noise, self.step, self.bad_rate = (
            f("min"), f("max"), f("period_s"), f("noise"), f("step"), f("bad_rate"),
        )
        waves = np.array([s.wave for s in specs])
        self.sel = {w: np.flatnonzero(waves == w) for w in set(waves.tolist())}
        # Spread phases so tags of one wave do not move in lockstep.
        self.phase = rng.random(n)
        self.state = self.lo + (self.hi - self.lo) * rng.random(n)
        self.state[self.sel.get("counter", [])] = self.lo[self.sel.get("counter", [])]
        self.round = np.array([t in ("int16", "uint16", "int32", "uint32") for t in types], dtype=bool)
        self.is_bool = np.array([t == "bool" for t in types], dtype=bool)

    def values(self, t: float) -> np.ndarray:
        lo, hi = self.lo, self.hi
        out = self.state.copy()
        cyc = t / self.period + self.phase
        if "sine" in self.sel:
            i = self.sel["sine"]
            mid, amp = (lo[i] + hi[i]) / 2, (hi[i] - lo[i]) / 2
            out[i] = mid + amp * np.sin(2 * np.pi * cyc[i])
        if "ramp" in self.sel:
            i = self.sel["ramp"]
            out[i] = lo[i] + (hi[i] - lo[i]) * (cyc[i] % 1.0)
        if "square" in self.sel:
            i = self.sel["square"]
            out[i] = np.where((cyc[i] % 1.0) < 0.5, lo[i], hi[i])
        if "constant" in self.sel:
            i = self.sel["constant"]
            out[i] = lo[i]
        if "counter" in self.sel:
            i = self.sel["counter"]
            nxt = self.state[i] + self.step[i]
            span = np.maximum(hi[i] - lo[i], 1e-9)
            self.state[i] = np.where(nxt > hi[i], lo[i] + (nxt - hi[i]) % span, nxt)
            out[i] = self.state[i]
        if "walk" in self.sel:
            i = self.sel["walk"]
            self.state[i] = np.clip(self.state[i] + self.step[i] * self.rng.standard_normal(len(i)), lo[i], hi[i])
            out[i] = self.state[i]
        noisy = self.noise > 0
        if noisy.any():
            out[noisy] += self.noise[noisy] * self.rng.standard_normal(int(noisy.sum()))
        out[self.round] = np.round(out[self.round])
        out[self.is_bool] = (out[self.is_bool] >= (lo[self.is_bool] + hi[self.is_bool]) / 2).astype(np.float64)
        return out


class SimulatedPlc:
    """A PLC that always answers, with values computed from the time since it started."""

    def __init__(self, plc: PlcConfig, seed: int | None = None, clock=time.monotonic) -> None:
        self.code = plc.code
        self.plc = plc
        self._clock = clock
        self._t0 = clock()
        rng = np.random.default_rng(seed)
        self._groups = [
            _SimGroup([t.sim or SimSpec() for t in g.tags], [t.type for t in g.tags], rng) for g in plc.groups
        ]

    @property
    def connected(self) -> bool:
        return True

    async def read(self, group_index: int) -> Reading:
        g = self._groups[group_index]
        values = g.values(self._clock() - self._t0)
        quality = np.full(len(values), QUALITY_GOOD, dtype=np.uint8)
        if np.any(g.bad_rate > 0):
            quality[g.rng.random(len(values)) < g.bad_rate] = QUALITY_BAD
        return Reading(values, quality)

    async def close(self) -> None:
        return None
