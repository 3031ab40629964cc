SELECT ironflow_create_history_partition($1, $2, $3);
