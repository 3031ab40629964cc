-- A source's deliveries, newest first, optionally of one status.
SELECT id, source_id, external_id, status, event_id, error, signature_key, request_body,
       request_headers, created_at
FROM webhook_deliveries
WHERE env_id = $1 AND source_id = $2 AND ($3::text IS NULL OR status = $3)
ORDER BY created_at DESC, id DESC LIMIT $4 OFFSET $5;
