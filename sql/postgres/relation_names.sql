-- Every relation of the database, of every kind (a history query's WITH names may not take one
-- of them).
SELECT relname::text FROM pg_class;
