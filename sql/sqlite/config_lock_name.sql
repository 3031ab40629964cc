-- One writer: already serialised.
SELECT 1 WHERE ?1 IS NOT NULL;
