-- A function's changes, oldest first (the partial index history_function holds exactly these).
SELECT seq, recorded_at, kind, payload FROM history
WHERE function_id = ?2 AND env_id = ?1
  AND kind IN ('function.registered', 'function.status_changed', 'function.rolled_back',
               'function.deleted')
ORDER BY seq;
