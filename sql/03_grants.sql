-- tagpipe: the writer's own database user, with only what it needs. Run by the DBA.
-- The tables belong to the owning schema (TAGPIPE below, or the plant schema); the
-- writer logs in as TAGPIPE_WRITER and names them with ORACLE_TABLE=TAGPIPE.TAG_DATA and
-- ORACLE_CURSOR_TABLE=TAGPIPE.TAGPIPE_CURSOR (or through synonyms, see the end).
--
-- The writer needs: to log in; INSERT (and SELECT, for check-db) on the data table;
-- SELECT, INSERT, UPDATE on the cursor table (it reads it with SELECT ... FOR UPDATE).
-- No DDL, no DELETE. Space is charged to the owner's tablespace quota, not the writer's.

CREATE USER TAGPIPE_WRITER IDENTIFIED BY "change-me-long-random"
    DEFAULT TABLESPACE USERS QUOTA 0 ON USERS;
GRANT CREATE SESSION TO TAGPIPE_WRITER;

GRANT SELECT, INSERT ON TAGPIPE.TAG_DATA TO TAGPIPE_WRITER;
GRANT SELECT, INSERT, UPDATE ON TAGPIPE.TAGPIPE_CURSOR TO TAGPIPE_WRITER;
-- The gap ledger (04_gap_table.sql):
GRANT SELECT, INSERT ON TAGPIPE.TAG_DATA_GAP TO TAGPIPE_WRITER;

-- Existing plant table instead (02_existing_table.sql):
--   GRANT SELECT, INSERT ON PLANT.MEAS_DATA TO TAGPIPE_WRITER;
--   GRANT SELECT, INSERT, UPDATE ON PLANT.TAGPIPE_CURSOR TO TAGPIPE_WRITER;

-- Optional: private synonyms, so the defaults ORACLE_TABLE=TAG_DATA and
-- ORACLE_CURSOR_TABLE=TAGPIPE_CURSOR work unqualified (needs CREATE SYNONYM, or the DBA
-- creates them in TAGPIPE_WRITER's schema):
--   CREATE SYNONYM TAGPIPE_WRITER.TAG_DATA FOR TAGPIPE.TAG_DATA;
--   CREATE SYNONYM TAGPIPE_WRITER.TAGPIPE_CURSOR FOR TAGPIPE.TAGPIPE_CURSOR;

-- Idle sessions behind a firewall: the writer sends keep-alives (ORACLE_EXPIRE_TIME_MIN);
-- on the server, SQLNET.EXPIRE_TIME in sqlnet.ora (dead connection detection) ends the
-- sessions of a writer host that vanished, releasing its locks sooner.
