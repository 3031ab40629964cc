SELECT ironflow_drop_history_partition($1);
