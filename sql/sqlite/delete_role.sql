DELETE FROM roles WHERE org_id = ?1 AND id = ?2;
