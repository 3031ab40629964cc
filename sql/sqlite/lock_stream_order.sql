-- SQLite has one writer: its transactions are already in stream order. Nothing to lock.
SELECT json_array_length(?1);
