-- Dispatched runs are running (a JSON array of run ids); `started_at` is kept from the first
-- dispatch.
UPDATE runs
SET status = 'running', started_at = COALESCE(started_at, $2), updated_at = $2
WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)));
