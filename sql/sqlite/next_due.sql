-- The next instant something becomes claimable or a timer fires (strictly in the future).
SELECT MIN(t) FROM (
    SELECT CASE WHEN state = 'leased' THEN lease_expires_at ELSE due_at END AS t
    FROM jobs
    WHERE state IN ('queued', 'parked', 'leased')
    UNION ALL
    SELECT timeout_at FROM jobs WHERE timeout_at IS NOT NULL
) due
WHERE t > ?1;
