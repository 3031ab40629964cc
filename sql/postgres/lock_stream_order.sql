-- Advisory locks of the streams a batch appends to, in the order given (sorted keys), before any
-- write of the transaction (see migration 0011).
SELECT ironflow_lock_streams(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)::bigint));
