-- The next instant something becomes claimable or a timer fires (strictly in the future).
SELECT MIN(CASE WHEN state = 'leased' THEN lease_expires_at ELSE due_at END)
FROM jobs
WHERE state IN ('queued', 'parked', 'leased')
  AND (CASE WHEN state = 'leased' THEN lease_expires_at ELSE due_at END) > $1;
