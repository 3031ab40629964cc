-- The newest $4 events of a name since $3, grouped by the version and schema hash they
-- carry ('' = never validated), each row with how many were scanned.
WITH recent AS (
    SELECT version, COALESCE(schema_hash, '') AS schema_hash
    FROM events
    WHERE env_id = $1 AND name = $2 AND received_at >= $3::timestamptz
    ORDER BY seq DESC
    LIMIT $4
)
SELECT version, schema_hash, count(*) AS count, (SELECT count(*) FROM recent) AS scanned
FROM recent
GROUP BY version, schema_hash
ORDER BY version, schema_hash;
