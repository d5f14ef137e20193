-- The trace context of the call that queued a delivery (W3C `traceparent`), so that a
-- redelivery by the background loop links to the trace of the confirmation. NULL when traces
-- were off or the row was queued by background work (an expiry's release).
ALTER TABLE outbox ADD COLUMN traceparent TEXT;
