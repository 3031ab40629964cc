-- Every table and view of the database (a history query's WITH names may not take one of them).
SELECT name FROM sqlite_master WHERE type IN ('table', 'view')
UNION ALL SELECT 'sqlite_master' UNION ALL SELECT 'sqlite_schema';
