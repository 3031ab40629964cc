-- A run's job row, locked before anything else of the run (the lock order every transaction
-- keeps: job rows first, in run order). No row: the run has ended or does not exist.
SELECT run_id FROM jobs WHERE run_id = $1 FOR UPDATE;
