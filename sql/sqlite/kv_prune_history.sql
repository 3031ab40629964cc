-- Keeps the newest `history` revisions of a key.
DELETE FROM kv_entries
WHERE env_id = ?1 AND bucket = ?2 AND key = ?3
  AND revision NOT IN (
      SELECT revision FROM kv_entries
      WHERE env_id = ?1 AND bucket = ?2 AND key = ?3
      ORDER BY revision DESC
      LIMIT ?4
  );
