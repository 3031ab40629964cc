-- Unsettled messages a member holds (past their ack deadline they are anyone's again).
SELECT count(*) FROM group_deliveries
WHERE group_id = ?1 AND consumer_id = ?2 AND state = 'inflight' AND due_at > ?3;
