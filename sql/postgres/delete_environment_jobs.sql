DELETE FROM jobs WHERE env_id IN (SELECT value FROM jsonb_array_elements_text($1::jsonb));
