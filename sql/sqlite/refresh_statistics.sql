-- SQLite's own upkeep of the planner's statistics: analyzes the tables this connection uses
-- whose statistics are missing or far off, and is a no-op otherwise (as the SQLite manual
-- advises for long-lived connections).
PRAGMA optimize;
