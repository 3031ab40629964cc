DELETE FROM runs WHERE id = ANY (SELECT jsonb_array_elements_text($1));
