-- The next instant something becomes claimable or a timer fires (strictly in the future), each
-- kind read from the end of its own index: a retry's delay per function (a few rows per
-- function, however long the queue), a sleep's or wait's deadline, a lease's expiry, a run's
-- timeout.
SELECT MIN(t) FROM (
    SELECT (SELECT j.due_at FROM jobs j
            WHERE j.env_id = f.env_id AND j.function_id = f.id AND j.state = 'queued' AND j.due_at > ?1
            ORDER BY j.due_at LIMIT 1) AS t
    FROM functions f
    UNION ALL
    SELECT MIN(due_at) FROM jobs WHERE state = 'parked' AND due_at > ?1
    UNION ALL
    SELECT MIN(lease_expires_at) FROM jobs WHERE state = 'leased' AND lease_expires_at > ?1
    UNION ALL
    SELECT MIN(timeout_at) FROM jobs WHERE timeout_at > ?1
) due;
