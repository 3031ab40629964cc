-- One writer: no row locks to take. Kept so both backends run the same code.
SELECT run_id FROM jobs WHERE run_id = ?1;
