-- tagpipe: writing into an EXISTING plant table (other column names, no identity columns).
-- Run by the DBA as the schema that owns the plant table. The writer never runs DDL.
--
-- Example plant table (already there, not created by this script):
--   PLANT.MEAS_DATA (MEAS_TIME TIMESTAMP(6), PLC_ID VARCHAR2(32), TAG_NAME VARCHAR2(32),
--                    VAL NUMBER, QUAL VARCHAR2(12))
-- matching writer settings (.env):
--   ORACLE_TABLE=PLANT.MEAS_DATA
--   ORACLE_COLUMNS=TS=MEAS_TIME,PLC_CODE=PLC_ID,TAG_ADDRESS=TAG_NAME,TAG_VALUE=VAL,QUALITY=QUAL,RING_EPOCH=-,SEQ=-
--   ORACLE_CURSOR_TABLE=PLANT.TAGPIPE_CURSOR
--
-- Without RING_EPOCH / SEQ in the table, exactly-once rests on the cursor table alone:
-- it is updated in the same transaction as the rows, so it is never ahead of or behind
-- them. Requirements on the plant table: TS must be TIMESTAMP (a DATE column loses the
-- fractional seconds), the text columns wide enough for the tag names (16 ASCII
-- characters at most), the value column NUMBER or BINARY_DOUBLE, and QUALITY (if mapped)
-- at least VARCHAR2(9). A column the writer does not fill must be nullable or have a
-- DEFAULT. QUALITY may be left out (QUALITY=-); then BAD rows still arrive with a NULL
-- value.

CREATE TABLE TAGPIPE_CURSOR (
    RING_EPOCH    NUMBER(20)   NOT NULL,
    NEXT_SEQ      NUMBER(20)   NOT NULL,
    UPDATED_AT    TIMESTAMP(6),
    CONSTRAINT TAGPIPE_CURSOR_PK PRIMARY KEY (RING_EPOCH)
);

-- Optional, if the plant table has no index for "one tag over time" yet:
--   CREATE INDEX MEAS_DATA_TAG_TS ON MEAS_DATA (PLC_ID, TAG_NAME, MEAS_TIME);
