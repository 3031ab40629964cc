-- Every table, view and other relation of the database (a history query's WITH names may not
-- take one of them).
SELECT relname::text FROM pg_class WHERE relkind IN ('r', 'v', 'm', 'p', 'f');
