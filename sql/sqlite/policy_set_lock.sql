-- SQLite has one writer: nothing to serialise.
SELECT 1;
