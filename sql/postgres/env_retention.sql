SELECT retention_days FROM environments WHERE id = $1;
