-- A continuous pipeline: an unbounded generated source, published as it is produced.
-- Stop it with Ctrl-C: reading the source stops, every row read is confirmed, a summary
-- is printed and streamsql exits 0.

CREATE TABLE clicks (id BIGINT, page VARCHAR, ts TIMESTAMP)
WITH (connector = 'datagen', rows_per_second = '500');

INSERT INTO clicks_out
SELECT id, page, ts, concat('clicks.', id % 10) AS subject
FROM clicks
WITH (connector = 'nats_sink', servers = '${NATS_URL:-nats://127.0.0.1:4222}', subject_field = 'subject');
