-- The public SQL interface: stable views over events, runs, steps and the history.
-- Re-created at every start (after migrations), so they always match the running version.
-- Column names and meanings are documented in README.md ("Query your history with SQL").

CREATE OR REPLACE VIEW ironflow_events AS
SELECT ev.id AS event_id, ev.seq, ev.name, ev.data, ev.metadata, ev.source, ev.idempotency_key,
       ev.received_at, env.name AS environment, p.name AS project, ev.env_id,
       ev.entity_id, ev.entity_type, ev.entity_version
FROM events ev
JOIN environments env ON env.id = ev.env_id
JOIN projects p ON p.id = env.project_id;

CREATE OR REPLACE VIEW ironflow_runs AS
SELECT r.id AS run_id, r.seq, r.function_id, r.function_version, r.status, r.event_id,
       ev.name AS event_name, r.input, r.output, r.error, r.attempt, r.max_attempts,
       r.parent_run_id, r.cancellation_cause, r.created_at, r.updated_at, r.started_at, r.ended_at,
       EXTRACT(EPOCH FROM (r.ended_at - COALESCE(r.started_at, r.created_at))) * 1000 AS duration_ms,
       env.name AS environment, p.name AS project, r.env_id
FROM runs r
LEFT JOIN events ev ON ev.id = r.event_id
JOIN environments env ON env.id = r.env_id
JOIN projects p ON p.id = env.project_id;

CREATE OR REPLACE VIEW ironflow_steps AS
SELECT s.run_id, s.step_id, s.name, s.step_type, s.sequence, s.status, s.output, s.error,
       s.attempt, s.started_at, s.ended_at,
       EXTRACT(EPOCH FROM (s.ended_at - s.started_at)) * 1000 AS duration_ms,
       r.function_id, env.name AS environment, p.name AS project, s.env_id
FROM steps s
JOIN runs r ON r.id = s.run_id
JOIN environments env ON env.id = s.env_id
JOIN projects p ON p.id = env.project_id;

CREATE OR REPLACE VIEW ironflow_history AS
SELECT h.seq, h.recorded_at, h.kind, h.run_id, h.function_id, h.event_id, h.payload,
       env.name AS environment, p.name AS project, h.env_id
FROM history h
JOIN environments env ON env.id = h.env_id
JOIN projects p ON p.id = env.project_id;

-- One row per entity stream (event sourcing): its head. `deleted` once its tombstone is appended.
CREATE OR REPLACE VIEW ironflow_streams AS
SELECT s.entity_id, s.entity_type, s.version, s.event_count, s.deleted, s.created_at,
       s.updated_at, env.name AS environment, p.name AS project, s.env_id
FROM streams s
JOIN environments env ON env.id = s.env_id
JOIN projects p ON p.id = env.project_id
WHERE s.version > 0;

-- The events of entity streams, with their version in the stream.
CREATE OR REPLACE VIEW ironflow_stream_events AS
SELECT ev.entity_id, ev.entity_type, ev.entity_version, ev.id AS event_id, ev.seq, ev.name,
       ev.data, ev.metadata, ev.version AS schema_version, ev.received_at,
       env.name AS environment, p.name AS project, ev.env_id
FROM events ev
JOIN environments env ON env.id = ev.env_id
JOIN projects p ON p.id = env.project_id
WHERE ev.entity_id IS NOT NULL;

-- One row per projection: its kind, status, cursor and lease.
CREATE OR REPLACE VIEW ironflow_projections AS
SELECT pr.name, pr.kind, pr.status, pr.error_message, pr.cursor_seq, pr.cursor_event_id,
       pr.cursor_event_at, pr.revision, pr.lease_epoch, pr.lease_expires_at, pr.created_at,
       pr.updated_at, env.name AS environment, p.name AS project, pr.env_id
FROM projections pr
JOIN environments env ON env.id = pr.env_id
JOIN projects p ON p.id = env.project_id;

-- The saved state of each partition of managed projections (the generation readers see).
CREATE OR REPLACE VIEW ironflow_projection_states AS
SELECT s.name AS projection, s.partition_key AS partition, s.state, s.last_event_seq,
       s.last_event_id, s.updated_at, env.name AS environment, p.name AS project, s.env_id
FROM projection_states s
JOIN projections pr ON pr.env_id = s.env_id AND pr.name = s.name AND pr.generation = s.generation
JOIN environments env ON env.id = s.env_id
JOIN projects p ON p.id = env.project_id;

-- History queries (ExecuteSQL) run as this role: it reads the documented views and nothing else
-- (no tables, no superuser functions), on top of the server's own checks. Making it needs
-- CREATEROLE; without that (or when several servers of one cluster race to make it) the
-- queries run as the server's role, still checked and narrowed to their environment.
DO $$
BEGIN
    BEGIN
        CREATE ROLE ironflow_history_reader NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO ironflow_history_reader', current_schema());
    GRANT SELECT ON ironflow_events, ironflow_runs, ironflow_steps, ironflow_history,
        ironflow_streams, ironflow_stream_events, ironflow_projections, ironflow_projection_states
        TO ironflow_history_reader;
    IF NOT pg_has_role(current_user, 'ironflow_history_reader', 'MEMBER') THEN
        EXECUTE format('GRANT ironflow_history_reader TO %I', current_user);
    END IF;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'ironflow: history queries run without their own role: %', SQLERRM;
END $$;
