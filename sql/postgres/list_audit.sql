SELECT seq, id, at, org_id, project_id, env_id, actor_kind, actor_id, event_type, action,
       resource, outcome, reason, status, method, path, rpc, function_id, run_id
FROM audit_log
WHERE org_id = $1
  AND ($2 = '' OR env_id = $2)
  AND ($3 = '' OR action = $3)
  AND ($4 = '' OR actor_id = $4)
  AND ($5 = '' OR event_type = $5)
  AND ($6 = '' OR function_id = $6)
  AND ($7 = '' OR run_id = $7)
  AND ($8::timestamptz IS NULL OR at >= $8)
  AND ($9::timestamptz IS NULL OR at < $9)
  AND ($10 = 0 OR seq < $10)
  AND ($11 = '' OR outcome = $11)
ORDER BY seq DESC
LIMIT $12;
