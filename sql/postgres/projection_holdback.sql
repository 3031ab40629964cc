-- Committed events a projection follows that it may not pass yet, and the backend whose open
-- transaction holds the snapshot's xmin back (its pid and since when), if it can be seen.
SELECT (SELECT count(*) FROM events e
        WHERE e.env_id = $1 AND e.name IN (SELECT jsonb_array_elements_text($2::jsonb))
          AND e.seq > $3 AND e.seq >= (s.xmin << 16)) AS held,
       a.pid AS pid, a.xact_start AS since
FROM (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin) s
LEFT JOIN pg_stat_activity a
       ON a.backend_xid IS NOT NULL AND a.backend_xid::text::bigint = s.xmin % 4294967296
LIMIT 1;
