-- SQLite's own upkeep of the planner's statistics: analyzes the tables this connection uses
-- whose statistics are missing or far off, and is a no-op otherwise (as the SQLite manual
-- advises for long-lived connections). analysis_limit bounds each index's analysis to about
-- that many rows: a full ANALYZE of a million-row history holds the one writer for most of a
-- second, an approximate one takes milliseconds and plans as well.
PRAGMA analysis_limit = 1000;
PRAGMA optimize;
