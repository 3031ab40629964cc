-- The only DELETE the history allows (its trigger checks the entry is past its retention).
DELETE FROM history WHERE seq IN (
    SELECT seq FROM history WHERE env_id = $1 AND recorded_at < $2 LIMIT $3);
