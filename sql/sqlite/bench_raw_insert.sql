-- `ironflow bench`: one single-row insert, committed on its own.
INSERT INTO ironflow_bench_raw (writer, n) VALUES (?1, ?2);
