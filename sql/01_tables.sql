-- tagpipe: tables for the writer, run once by the DBA as the owning schema (e.g. TAGPIPE).
-- The writer never runs DDL. Oracle Database 12.1 or later (python-oracledb Thin mode).
--
--   sqlplus tagpipe@//dbhost:1521/PLANTPDB @01_tables.sql
--
-- Sizes: PLC_CODE / TAG_ADDRESS hold at most 16 ASCII characters in the ring; 64 leaves
-- room. TS is UTC with microseconds. TAG_VALUE is NULL when QUALITY is BAD.
-- RING_EPOCH + SEQ is each record's identity (64-bit unsigned: NUMBER(20)).

CREATE TABLE TAG_DATA (
    TS            TIMESTAMP(6)      NOT NULL,
    PLC_CODE      VARCHAR2(64 BYTE) NOT NULL,
    TAG_ADDRESS   VARCHAR2(64 BYTE) NOT NULL,
    TAG_VALUE     NUMBER,
    QUALITY       VARCHAR2(9 BYTE)  NOT NULL,
    RING_EPOCH    NUMBER(20)        NOT NULL,
    SEQ           NUMBER(20)        NOT NULL,
    CONSTRAINT TAG_DATA_QUALITY_CK CHECK (QUALITY IN ('GOOD', 'BAD', 'UNCERTAIN'))
)
-- One partition per day, created by Oracle as rows arrive: old days are dropped in one
-- statement (see "Retention" below) instead of deleted row by row. At 1,000 values/s a
-- day is ~86 million rows; use NUMTOYMINTERVAL(1, 'MONTH') for small plants.
PARTITION BY RANGE (TS) INTERVAL (NUMTODSINTERVAL(1, 'DAY'))
    (PARTITION TAG_DATA_P0 VALUES LESS THAN (TIMESTAMP '2025-01-01 00:00:00'));

-- The identity, enforced by a global unique index (a local one would have to contain TS).
-- The cursor table below already makes writes exactly once; this key is the second net.
ALTER TABLE TAG_DATA ADD CONSTRAINT TAG_DATA_PK PRIMARY KEY (RING_EPOCH, SEQ)
    USING INDEX (CREATE UNIQUE INDEX TAG_DATA_PK ON TAG_DATA (RING_EPOCH, SEQ));

-- What reports ask: one tag over a time range.
CREATE INDEX TAG_DATA_TAG_TS ON TAG_DATA (PLC_CODE, TAG_ADDRESS, TS) LOCAL;

-- The writer's position per ring epoch, updated in the same transaction as the rows:
-- a record with SEQ < NEXT_SEQ for its epoch is already in TAG_DATA.
CREATE TABLE TAGPIPE_CURSOR (
    RING_EPOCH    NUMBER(20)   NOT NULL,
    NEXT_SEQ      NUMBER(20)   NOT NULL,
    UPDATED_AT    TIMESTAMP(6),
    CONSTRAINT TAGPIPE_CURSOR_PK PRIMARY KEY (RING_EPOCH)
);

-- Retention (example, run by a scheduler job, not by the writer): drop days older than
-- 400 days without blocking inserts; the global index stays usable.
--   ALTER TABLE TAG_DATA DROP PARTITION FOR (TIMESTAMP '2025-01-15 00:00:00')
--       UPDATE GLOBAL INDEXES;
