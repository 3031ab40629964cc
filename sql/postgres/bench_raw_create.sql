-- `ironflow bench`: the scratch table for the raw single-row commit rate (dropped afterwards).
CREATE TABLE IF NOT EXISTS ironflow_bench_raw (id BIGSERIAL PRIMARY KEY, writer INT NOT NULL, n INT NOT NULL, at TIMESTAMPTZ NOT NULL DEFAULT now());
