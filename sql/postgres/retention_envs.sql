-- Every environment, deleted ones too: their entries stay until a retention of theirs says otherwise.
SELECT id AS env_id, retention_days FROM environments ORDER BY id;
