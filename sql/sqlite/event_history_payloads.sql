-- The history entries that carry an event's data (its arrival; entries of runs name it too).
SELECT seq, payload FROM history WHERE event_id = ?1 AND run_id IS NULL ORDER BY seq;
