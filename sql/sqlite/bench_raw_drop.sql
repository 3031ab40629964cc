DROP TABLE IF EXISTS ironflow_bench_raw;
