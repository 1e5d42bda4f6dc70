"""Modbus TCP PLCs with pymodbus's asyncio client: the only module that imports pymodbus.

pymodbus 3.16 is pinned ``>=3.16,<4`` (its datastore API changes in 4.0; the client calls
used here are stable). The client's own retries and reconnect loop are switched off
(``retries=0``, ``reconnect_delay=0``): a PLC that does not answer must cost one
``timeout_s`` per poll, not four, and reconnecting follows our own backoff so a dead PLC
is retried at 0.5 s, 1 s, 2 s ... up to ``backoff_max_s`` (with jitter), never in a tight
loop. Each PLC has one connection shared by its groups (many PLCs accept only a few);
pymodbus serialises requests on it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import numpy as np
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from shm.layout import QUALITY_BAD, QUALITY_GOOD

from .. import registers
from ..config import PlcConfig
from .base import Reading, SourceUnavailable

log = logging.getLogger("tagpipe.poller.modbus")

BACKOFF_START_S = 0.5


def quiet_pymodbus() -> None:
    """pymodbus logs every timeout and refused connect itself; we log once per episode."""
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


class ModbusPlc:
    """One PLC over Modbus TCP. ``read`` raises SourceUnavailable when it does not answer."""

    def __init__(self, plc: PlcConfig, clock=time.monotonic) -> None:
        self.code = plc.code
        self.plc = plc
        self.plans = [registers.ReadPlan([t.spec for t in g.tags], plc.max_gap) for g in plc.groups]  # type: ignore[misc]
        self._clock = clock
        self._client: AsyncModbusTcpClient | None = None
        self._lock = asyncio.Lock()
        self._backoff = 0.0
        self._next_attempt = 0.0
        self._last_error = ""
        self.requests = 0  # read requests sent (for tests and the benchmark)

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def _connection(self) -> AsyncModbusTcpClient:
        async with self._lock:
            if self._client is not None and self._client.connected:
                return self._client
            now = self._clock()
            if now < self._next_attempt:
                raise SourceUnavailable(f"{self._last_error}; next connection attempt in {self._next_attempt - now:.1f} s")
            client = AsyncModbusTcpClient(
                self.plc.host, port=self.plc.port, timeout=self.plc.timeout_s, retries=0, reconnect_delay=0,
                name=self.code,
            )
            try:
                ok = await asyncio.wait_for(client.connect(), self.plc.timeout_s + 1.0)
            except (asyncio.TimeoutError, OSError) as e:
                ok = False
                self._last_error = f"connect failed: {e or type(e).__name__}"
            if not ok:
                client.close()
                if not self._last_error.startswith("connect failed"):
                    self._last_error = "connect failed (refused or timed out)"
                self._schedule_retry()
                raise SourceUnavailable(self._last_error)
            self._client = client
            self._backoff = 0.0
            return client

    def _schedule_retry(self) -> None:
        self._backoff = min(max(self._backoff * 2, BACKOFF_START_S), self.plc.backoff_max_s)
        self._next_attempt = self._clock() + self._backoff * random.uniform(0.8, 1.0)

    def _drop(self, reason: str) -> None:
        self._last_error = reason
        if self._client is not None:
            self._client.close()
            self._client = None
        self._schedule_retry()

    async def read(self, group_index: int) -> Reading:
        plan = self.plans[group_index]
        client = await self._connection()
        answers: list = []
        ok = np.ones(len(plan.reads), dtype=bool)
        unit = self.plc.unit_id
        for i, rd in enumerate(plan.reads):
            self.requests += 1
            try:
                if rd.kind == registers.HOLDING:
                    rsp = await client.read_holding_registers(rd.start, count=rd.count, device_id=unit)
                elif rd.kind == registers.INPUT:
                    rsp = await client.read_input_registers(rd.start, count=rd.count, device_id=unit)
                elif rd.kind == registers.COIL:
                    rsp = await client.read_coils(rd.start, count=rd.count, device_id=unit)
                else:
                    rsp = await client.read_discrete_inputs(rd.start, count=rd.count, device_id=unit)
            except (ModbusException, asyncio.TimeoutError, OSError) as e:
                self._drop(f"no answer to {rd.kind}:{rd.start}+{rd.count}: {e}")
                raise SourceUnavailable(self._last_error) from None
            except Exception as e:  # a client-library surprise must not stop the other PLCs
                self._drop(f"request {rd.kind}:{rd.start}+{rd.count} failed: {type(e).__name__}: {e}")
                raise SourceUnavailable(self._last_error) from None
            if rsp.isError():
                # The PLC answered with an exception (illegal address, busy...): the
                # connection is fine, only this block's tags are BAD.
                ok[i] = False
                answers.append([])
                self._last_error = f"exception response to {rd.kind}:{rd.start}+{rd.count}: {rsp}"
                continue
            answers.append(rsp.bits if rd.kind in registers.BIT_KINDS else rsp.registers)
        padded = [a if ok[i] else [0] * plan.reads[i].count for i, a in enumerate(answers)]
        values = plan.decode(padded)
        quality = np.where(ok[plan.tag_read], QUALITY_GOOD, QUALITY_BAD).astype(np.uint8)
        return Reading(values, quality, "" if ok.all() else self._last_error)

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
