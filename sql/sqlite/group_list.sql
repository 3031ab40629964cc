-- Consumer groups of an environment (one by name, or all), with the members seen since ?3.
SELECT g.id, g.name, g.pattern, g.filter_expr, g.ack_mode, g.max_inflight, g.max_redeliveries,
       g.redeliver_delay_ms, g.metadata, g.status, g.created_at, g.updated_at,
       (SELECT count(*) FROM group_members m WHERE m.group_id = g.id AND m.seen_at > ?3) AS members
FROM consumer_groups g
WHERE g.env_id = ?1 AND (?2 IS NULL OR g.name = ?2)
ORDER BY g.name;
