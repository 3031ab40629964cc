SELECT input, output, error FROM runs WHERE id = $1;
