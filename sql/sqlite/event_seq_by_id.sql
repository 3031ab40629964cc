-- An event's sequence number, by id.
SELECT seq FROM events WHERE env_id = ?1 AND id = ?2;
