DELETE FROM api_keys WHERE org_id = $1 AND id = $2;
