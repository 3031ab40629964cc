-- In-process wakeups only.
SELECT 1;
