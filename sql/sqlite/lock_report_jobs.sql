-- One writer: no row locks to take. Kept so both backends run the same code.
SELECT run_id FROM jobs WHERE dispatch_id IN (SELECT value FROM json_each(?1)) ORDER BY run_id;
