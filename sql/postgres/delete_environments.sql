UPDATE environments SET deleted_at = $2, name = name || '~deleted~' || id
WHERE id IN (SELECT value FROM jsonb_array_elements_text($1::jsonb)) AND deleted_at IS NULL;
