INSERT INTO event_schema_revisions (env_id, event_name, version, schema_json, description,
                                    change_type, change_reason, actor_id, recorded_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9);
