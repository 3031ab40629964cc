-- A page of a projection's archived changes, newest first, below a revision (0: from the newest).
SELECT revision, definition, change_type, change_reason, actor_id, event_id, recorded_at
FROM projection_revisions
WHERE env_id = $1 AND name = $2 AND ($3::bigint = 0 OR revision < $3)
ORDER BY revision DESC
LIMIT $4;
