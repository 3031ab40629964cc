-- Cross-node live fan-out: '<node>:<kind>:<seq>'; other nodes read the durable copy.
SELECT pg_notify('ironflow_messages', $1);
