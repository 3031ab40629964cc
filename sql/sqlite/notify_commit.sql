-- Every writer is in this process: nothing to tell.
SELECT 1 WHERE ?1 IS NOT NULL;
