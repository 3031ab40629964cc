INSERT INTO webhook_deliveries (id, env_id, source_id, external_id, status, event_id, error,
                                signature_key, request_body, request_headers, created_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11);
