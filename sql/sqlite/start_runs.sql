-- Dispatched runs are running (a JSON array of run ids); `started_at` is kept from the first
-- dispatch.
UPDATE runs
SET status = 'running', started_at = COALESCE(started_at, ?2), updated_at = ?2
WHERE id IN (SELECT value FROM json_each(?1));
