DELETE FROM runs WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)));
