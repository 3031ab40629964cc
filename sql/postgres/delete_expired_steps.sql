DELETE FROM steps WHERE run_id = ANY (SELECT jsonb_array_elements_text($1));
