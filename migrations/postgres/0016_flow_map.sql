-- The flow map: the run whose step published a topic message (X-Ironflow-Run-ID), so
-- `GET /api/v1/flow/topic-edges` can say which function publishes to which topic.
ALTER TABLE messages ADD COLUMN published_by_run TEXT;
