"""The writer's recorder of its ``writer.*`` words and 10-second buckets.

It lives in ``pipeline.common.telemetry`` next to the schema and the figures read from
it (one module per figure); this name stays so the writer's modules import it unchanged.
"""

from __future__ import annotations

from pipeline.common.telemetry import (
    ERR_DB_GONE,
    ERR_DISK_FULL,
    ERR_NONE,
    ERR_PERMANENT,
    ERR_QUARANTINE,
    ERR_TRANSIENT,
    WriterMetrics,
)

__all__ = ["ERR_DB_GONE", "ERR_DISK_FULL", "ERR_NONE", "ERR_PERMANENT", "ERR_QUARANTINE", "ERR_TRANSIENT", "WriterMetrics"]
