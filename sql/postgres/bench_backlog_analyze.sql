-- `ironflow bench --backlog`: fresh planner statistics after seeding.
ANALYZE runs, jobs, history;
