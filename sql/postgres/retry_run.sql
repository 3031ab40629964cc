UPDATE runs SET attempt = attempt + 1, error = $2, updated_at = $3 WHERE id = $1;
