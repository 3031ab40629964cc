-- History retention: a per-environment setting (NULL: keep everything, the default), and the
-- history partitioned by month, so whole expired months are dropped instead of deleted row by row.

ALTER TABLE environments ADD COLUMN retention_days INTEGER
    CHECK (retention_days IS NULL OR retention_days BETWEEN 1 AND 36500);

-- The history stays append-only: an UPDATE only for a redaction (as before), a DELETE only of an
-- entry older than its environment's retention (what the retention pass removes), never TRUNCATE.
CREATE OR REPLACE FUNCTION history_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND NEW.seq = OLD.seq AND NEW.recorded_at = OLD.recorded_at AND NEW.env_id = OLD.env_id
       AND NEW.kind = OLD.kind AND NEW.run_id IS NOT DISTINCT FROM OLD.run_id
       AND NEW.function_id IS NOT DISTINCT FROM OLD.function_id
       AND NEW.event_id IS NOT DISTINCT FROM OLD.event_id
       AND strpos(NEW.payload::text, '"$redacted": true') > 0 THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'DELETE' AND EXISTS (
        SELECT 1 FROM environments e
        WHERE e.id = OLD.env_id AND e.retention_days IS NOT NULL
          AND OLD.recorded_at < now() - make_interval(days => e.retention_days)) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'history is append-only: % is not allowed', TG_OP;
END;
$$;

-- The table so far becomes the first partition (no rows are copied): it holds everything up to
-- the end of this month; later months get partitions of their own, made ahead of time.
ALTER TABLE history RENAME TO history_before_partitioning;
DROP TRIGGER history_no_update ON history_before_partitioning;
DROP TRIGGER history_no_truncate ON history_before_partitioning;
-- Its key becomes (seq, recorded_at), the partitioned table's (a key must hold the partition key).
ALTER TABLE history_before_partitioning DROP CONSTRAINT history_pkey;
ALTER INDEX history_run RENAME TO history_before_partitioning_run;
ALTER INDEX history_env_seq RENAME TO history_before_partitioning_env_seq;
ALTER INDEX history_event RENAME TO history_before_partitioning_event;
ALTER INDEX history_function RENAME TO history_before_partitioning_function;

CREATE TABLE history (
    seq          BIGINT NOT NULL DEFAULT nextval('history_seq_seq'),
    recorded_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    env_id       TEXT NOT NULL,
    kind         TEXT NOT NULL,
    run_id       TEXT,
    function_id  TEXT,
    event_id     TEXT,
    payload      JSONB NOT NULL,
    PRIMARY KEY (seq, recorded_at)
) PARTITION BY RANGE (recorded_at);
ALTER SEQUENCE history_seq_seq OWNED BY history.seq;
CREATE INDEX history_run ON history (run_id, seq) WHERE run_id IS NOT NULL;
CREATE INDEX history_env_seq ON history (env_id, seq);
CREATE INDEX history_event ON history (event_id) WHERE event_id IS NOT NULL;
CREATE INDEX history_function ON history (function_id, seq)
    WHERE kind IN ('function.registered', 'function.status_changed', 'function.rolled_back',
                   'function.deleted');
CREATE TRIGGER history_no_update BEFORE UPDATE OR DELETE ON history
    FOR EACH ROW EXECUTE FUNCTION history_is_append_only();
CREATE TRIGGER history_no_truncate BEFORE TRUNCATE ON history
    FOR EACH STATEMENT EXECUTE FUNCTION history_is_append_only();

DO $$
BEGIN
    EXECUTE format(
        'ALTER TABLE history ATTACH PARTITION history_before_partitioning FOR VALUES FROM (MINVALUE) TO (%L)',
        date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '1 month');
END $$;
-- Whatever no monthly partition covers (if partitions were not made in time): kept, never dropped.
CREATE TABLE history_default PARTITION OF history DEFAULT;

-- Partition upkeep runs as the schema's owner, so `serve` needs no DDL rights: these two are all
-- it may do (EXECUTE is granted with the documented grants).
CREATE FUNCTION ironflow_create_history_partition(name TEXT, from_at TIMESTAMPTZ, to_at TIMESTAMPTZ)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF name !~ '^history_y[0-9]{4}m[0-9]{2}$' THEN
        RAISE EXCEPTION 'not a history partition name: %', name;
    END IF;
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF history FOR VALUES FROM (%L) TO (%L)',
                   name, from_at, to_at);
END;
$$;

CREATE FUNCTION ironflow_drop_history_partition(name TEXT) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF name = 'history_default' OR NOT EXISTS (
        SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'history'::regclass AND c.relname = name) THEN
        RAISE EXCEPTION 'not a droppable history partition: %', name;
    END IF;
    EXECUTE format('DROP TABLE %I', name);
END;
$$;
REVOKE ALL ON FUNCTION ironflow_create_history_partition(TEXT, TIMESTAMPTZ, TIMESTAMPTZ) FROM PUBLIC;
REVOKE ALL ON FUNCTION ironflow_drop_history_partition(TEXT) FROM PUBLIC;
