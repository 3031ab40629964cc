-- Puts the cursor where a rebuild left it (it may move back: the replay starts over).
UPDATE projections SET cursor_seq = ?3, cursor_event_id = ?4, cursor_event_at = ?5, updated_at = ?6
WHERE env_id = ?1 AND name = ?2;
