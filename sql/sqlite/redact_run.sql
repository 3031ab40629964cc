UPDATE runs SET input = ?2, output = ?3, error = ?4, updated_at = ?5 WHERE id = ?1;
