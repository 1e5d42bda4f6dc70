"""MELSEC PLCs over the MC protocol (SLMP, 3E binary frames) with asyncio streams.

One TCP connection per PLC, shared by its groups and serialised by a lock (an MC port
often accepts a single connection, and 3E responses carry no serial number: they are
matched to requests by order, so a request that times out drops the connection rather
than risk reading its late answer as the next one's). A PLC that refuses, times out or
drops the connection raises SourceUnavailable and is retried with the same backoff as a
Modbus PLC (0.5 s, 1 s, 2 s ... up to ``backoff_max_s``, with jitter); every wait is
bounded by ``timeout_s``, so a dead PLC never delays the others.

A non-zero end code (device out of range, unsupported device...) leaves the connection
up: only the tags of that request are BAD, and ``Reading.error`` names the code and its
meaning.
"""

from __future__ import annotations

import asyncio
import random
import time

import numpy as np

from shm.layout import QUALITY_BAD, QUALITY_GOOD

from .. import melsec as M
from ..config import PlcConfig
from .base import Reading, SourceUnavailable

BACKOFF_START_S = 0.5


class McPlc:
    """One MELSEC PLC over MC 3E binary. ``read`` raises SourceUnavailable when it does not answer."""

    def __init__(self, plc: PlcConfig, clock=time.monotonic) -> None:
        if plc.mc is None:
            raise ValueError(f"PLC {plc.code} is not an MC PLC")
        self.code = plc.code
        self.plc = plc
        self.mc: M.McSettings = plc.mc
        self.plans = [M.McReadPlan([t.spec for t in g.tags], self.mc.series, plc.max_gap,  # type: ignore[misc]
                                   self.mc.random_read) for g in plc.groups]
        self._timer = M.monitoring_timer(plc.timeout_s)
        # Frames are fixed per group: built once, sent as is on every poll.
        self._frames = [[self._request(rd) for rd in plan.reads] for plan in self.plans]
        self._random = [any(isinstance(rd, M.RandomRead) for rd in plan.reads) for plan in self.plans]
        self._clock = clock
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self._backoff = 0.0
        self._next_attempt = 0.0
        self._last_error = ""
        self.requests = 0  # requests sent (for tests and the benchmark)
        self.connects = 0  # connections opened
        self._served = 0

    def _request(self, rd: M.BatchRead | M.RandomRead) -> bytes:
        if isinstance(rd, M.BatchRead):
            return M.batch_read_request(self.mc, self._timer, rd.kind, rd.start, rd.count)
        return M.random_read_request(self.mc, self._timer, [(k.code, n) for k, n in rd.words_at],
                                     [(k.code, n) for k, n in rd.dwords_at])

    def _batch_only(self, g: int) -> None:
        tags = [t.spec for t in self.plc.groups[g].tags]
        self.plans[g] = M.McReadPlan(tags, self.mc.series, self.plc.max_gap, random_read=False)  # type: ignore[misc]
        self._frames[g] = [self._request(rd) for rd in self.plans[g].reads]
        self._random[g] = False

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def _connect(self) -> None:
        now = self._clock()
        if now < self._next_attempt:
            raise SourceUnavailable(f"{self._last_error}; next connection attempt in {self._next_attempt - now:.1f} s")
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.plc.host, self.plc.port), self.plc.timeout_s)
        except (asyncio.TimeoutError, OSError) as e:
            self._last_error = f"connect to {self.plc.host}:{self.plc.port} failed: {e or type(e).__name__}"
            self._schedule_retry()
            raise SourceUnavailable(self._last_error) from None
        self.connects += 1
        self._served = 0  # requests answered on this connection
        self._backoff = 0.0

    def _schedule_retry(self) -> None:
        self._backoff = min(max(self._backoff * 2, BACKOFF_START_S), self.plc.backoff_max_s)
        self._next_attempt = self._clock() + self._backoff * random.uniform(0.8, 1.0)

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    def _drop(self, reason: str) -> SourceUnavailable:
        self._last_error = reason
        self._close_writer()
        self._schedule_retry()
        return SourceUnavailable(reason)

    async def _exchange(self, frame: bytes) -> tuple[int, bytes]:
        assert self._reader is not None and self._writer is not None
        self._writer.write(frame)
        await self._writer.drain()
        head = await self._reader.readexactly(M.RESPONSE_HEAD)
        rest = await self._reader.readexactly(M.response_length(head))
        self._served += 1
        return M.split_response(rest)

    async def read(self, group_index: int) -> Reading:
        plan = self.plans[group_index]
        frames = self._frames[group_index]
        answers: list = []
        errors: list[str] = []
        retry = False
        async with self._lock:
            if self._reader is not None and self._reader.at_eof():
                self._close_writer()  # the PLC closed it since the last poll (some close after each request)
            if self._writer is None:
                await self._connect()
            for rd, frame in zip(plan.reads, frames):
                self.requests += 1
                what = rd.label(self.mc.series)
                try:
                    try:
                        end, data = await asyncio.wait_for(self._exchange(frame), self.plc.timeout_s)
                    except (OSError, asyncio.IncompleteReadError):
                        if not self._served:
                            raise
                        # A connection that has answered before was closed by the PLC (some
                        # close after every request): one fresh connection, one more try.
                        self._close_writer()
                        await self._connect()
                        self.requests += 1
                        end, data = await asyncio.wait_for(self._exchange(frame), self.plc.timeout_s)
                except asyncio.TimeoutError:
                    raise self._drop(f"no answer to {what} within {self.plc.timeout_s:g} s") from None
                except (OSError, asyncio.IncompleteReadError) as e:
                    raise self._drop(f"connection lost during {what}: {type(e).__name__}: {e}") from None
                except ValueError as e:  # a frame that is not 3E binary: resynchronise by reconnecting
                    raise self._drop(f"bad response to {what}: {e}") from None
                if end != 0 and isinstance(rd, M.RandomRead) and self._random[group_index]:
                    # One device past the PLC's range spoils a whole random read: from now
                    # on this group uses batch reads only, so the end code lands on that
                    # device's tags alone. The group is read again at once, that way.
                    self._batch_only(group_index)
                    retry = True
                    break
                if end != 0:
                    # The PLC answered but refused this request: only its tags are BAD.
                    errors.append(f"{M.end_code_text(end)} for {what}")
                    answers.append(None)
                    continue
                if isinstance(rd, M.BatchRead) and rd.kind.bit:
                    ans = M.unpack_bits(data, rd.count)
                    expected = rd.count
                else:
                    # Whole words only: an odd byte (a broken gateway) must make a "short
                    # answer" below, not a ValueError from numpy that ends the poller.
                    ans = np.frombuffer(data[: len(data) & ~1], dtype="<u2")
                    expected = rd.words
                if len(ans) < expected:
                    raise self._drop(f"short answer to {what}: {len(data)} bytes")
                answers.append(ans)
        if retry:
            return await self.read(group_index)
        ok = np.array([a is not None for a in answers], dtype=bool)
        values = plan.decode(answers)
        quality = np.where(ok[plan.tag_read], QUALITY_GOOD, QUALITY_BAD).astype(np.uint8)
        if errors:
            self._last_error = "; ".join(errors)
        return Reading(values, quality, "; ".join(errors))

    async def close(self) -> None:
        self._close_writer()
