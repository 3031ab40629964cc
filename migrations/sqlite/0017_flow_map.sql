-- The flow map: the run whose step published a topic message (X-Ironflow-Run-ID), so
-- `GET /api/v1/flow/topic-edges` can say which function publishes to which topic.
ALTER TABLE messages ADD COLUMN published_by_run TEXT;

-- OTLP tracing: the W3C traceparent of the emit that stored the event (only with
-- --otlp-endpoint), so the runs it starts are dispatched and committed in the emit's trace.
ALTER TABLE events ADD COLUMN traceparent TEXT;
