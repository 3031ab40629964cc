-- The planner's statistics for the tables whose size swings (the queue: empty, then a backlog,
-- then empty) or grows fast (runs, steps, history). A cached plan is made from the statistics
-- of its day; autovacuum refreshes them at most once a minute, and on a young database a plan
-- made when a table had ten rows (a sequential scan) then reads the whole table on every call
-- for that minute. So a table is analyzed here once it has changed by more than its size at its
-- last analyze (at least 500 rows): a handful of times while a table grows from nothing, then
-- rarely. SKIP_LOCKED: a table autovacuum is working on is left to it.
DO $$
DECLARE
    stale regclass;
BEGIN
    FOR stale IN
        SELECT s.relid::regclass
        FROM pg_stat_user_tables s
        JOIN pg_class c ON c.oid = s.relid
        WHERE s.relid IN ('jobs'::regclass, 'runs'::regclass, 'steps'::regclass,
                          'history'::regclass, 'events'::regclass, 'waits'::regclass)
          AND s.n_mod_since_analyze > GREATEST(500, c.reltuples)
    LOOP
        EXECUTE format('ANALYZE (SKIP_LOCKED) %s', stale);
    END LOOP;
END
$$;
