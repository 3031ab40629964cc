-- Whether any function is served in push mode (the push dispatcher idles when none is).
SELECT EXISTS (SELECT 1 FROM functions WHERE COALESCE(definition->>'mode', 'pull') = 'push');
