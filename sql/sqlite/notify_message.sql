-- In-process fan-out only.
SELECT 1 WHERE ?1 IS NOT NULL;
