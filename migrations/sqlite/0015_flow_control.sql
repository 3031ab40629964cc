-- Scheduling and flow control.
-- cron_schedules: one row per cron trigger of a function's current definition; next_at is the
-- tick a node claims (compare-and-set), so each tick starts one run however many nodes share
-- the database. throttle_windows: the start instants a throttle key gave out (JSON array of
-- Unix ms, at most the limit). debounce_entries: one pending run per (function, key), carrying
-- the latest event, fired at fires_at. The two written on emits carry no foreign key to
-- environments (invariant 29: no KEY SHARE lock on the environment row per write).
CREATE TABLE cron_schedules (
    env_id           TEXT NOT NULL REFERENCES environments (id),
    function_id      TEXT NOT NULL,
    trigger_index    INTEGER NOT NULL,
    expression       TEXT NOT NULL,
    function_version INTEGER NOT NULL,
    next_at          TEXT NOT NULL,
    last_tick_at     TEXT,
    updated_at       TEXT NOT NULL,
    PRIMARY KEY (env_id, function_id, trigger_index)
);
CREATE INDEX cron_schedules_next ON cron_schedules (next_at);

CREATE TABLE throttle_windows (
    env_id       TEXT NOT NULL,
    function_id  TEXT NOT NULL,
    throttle_key TEXT NOT NULL,
    starts       TEXT NOT NULL,
    PRIMARY KEY (env_id, function_id, throttle_key)
);

CREATE TABLE debounce_entries (
    env_id           TEXT NOT NULL,
    function_id      TEXT NOT NULL,
    debounce_key     TEXT NOT NULL,
    function_version INTEGER NOT NULL,
    period_ms        INTEGER NOT NULL,
    event_id         TEXT NOT NULL,
    events           INTEGER NOT NULL,
    armed_at         TEXT NOT NULL,
    fires_at         TEXT NOT NULL,
    PRIMARY KEY (env_id, function_id, debounce_key)
);
CREATE INDEX debounce_entries_due ON debounce_entries (fires_at);
