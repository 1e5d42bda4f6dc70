-- tagpipe: the gap ledger table, run once by the DBA as the owning schema (after 01_tables.sql).
-- The writer never runs DDL. Its name is ORACLE_TABLE || '_GAP' (TAG_DATA_GAP), or
-- ORACLE_GAP_TABLE when set (e.g. next to an existing table mapped with ORACLE_COLUMNS).
--
--   sqlplus tagpipe@//dbhost:1521/PLANTPDB @04_gap_table.sql
--
-- One row per loss or outage of collection (docs/writer.md, "Gap ledger"):
--   KIND overwritten      records overwritten in the ring before the writer read them:
--                         FIRST_SEQ..LAST_SEQ of RING_EPOCH, ROW_COUNT records, PLC_CODE '*'
--        poller_down      no poller ran (DETAIL: killed_pid_N / stopped / ring_replaced)
--        plc_unreachable  one PLC did not answer (DETAIL: the error, shortened)
--        quarantine       ROW_COUNT rows moved to quarantine file DETAIL
-- START_TS .. END_TS is the span (UTC). The key makes every row exactly once: the writer
-- inserts and treats ORA-00001 on it as "already written".

CREATE TABLE TAG_DATA_GAP (
    RING_EPOCH    NUMBER(20)        NOT NULL,
    KIND          VARCHAR2(32 BYTE) NOT NULL,
    FIRST_SEQ     NUMBER(20)        NOT NULL,
    LAST_SEQ      NUMBER(20)        NOT NULL,
    ROW_COUNT     NUMBER(20)        NOT NULL,
    START_TS      TIMESTAMP(6)      NOT NULL,
    END_TS        TIMESTAMP(6)      NOT NULL,
    PLC_CODE      VARCHAR2(64 BYTE) NOT NULL,
    DETAIL        VARCHAR2(200 BYTE),
    RECORDED_AT   TIMESTAMP(6)      NOT NULL,
    CONSTRAINT TAG_DATA_GAP_PK PRIMARY KEY (RING_EPOCH, KIND, FIRST_SEQ)
);

-- What reports ask: the gaps overlapping a time range.
CREATE INDEX TAG_DATA_GAP_TS ON TAG_DATA_GAP (START_TS, END_TS);

-- The writer's account needs SELECT, INSERT on it (03_grants.sql).
