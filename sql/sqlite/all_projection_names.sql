SELECT env_id, name FROM projections ORDER BY env_id, name;
