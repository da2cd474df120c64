-- Headers from columns: every click becomes a JSON message whose headers carry its trace
-- id and tenant (header_fields), any per-row extras from a map column (headers_field),
-- and a static header for all. Header columns leave the JSON payload.
-- Run with: NATS_URL=nats://127.0.0.1:4222 streamsql run sql-examples/headers.sql
-- and watch with: streamsql sub 'clicks.>' --server "$NATS_URL"

CREATE CONNECTION local_nats FROM nats_sink
WITH (servers = '${NATS_URL:-nats://127.0.0.1:4222}');

CREATE VIEW clicks AS
SELECT * FROM (VALUES
        ('t-101', 'acme', '/home', 'spring', 120),
        ('t-102', 'globex', '/cart', NULL, 45),
        ('t-103', 'acme', '/checkout', 'spring', 300)
     ) AS t(trace_id, tenant, page, campaign, ms);

INSERT INTO clicks_out
SELECT concat('clicks.', tenant) AS subject,
       trace_id,
       tenant,
       -- Extra headers, named at run time; a null value sends no header.
       MAP {'Page': page, 'Campaign': campaign} AS extra,
       page,
       ms
FROM clicks
WITH (
    connector = 'nats_sink',
    connection = 'local_nats',
    subject_field = 'subject',
    header_fields = 'trace_id,tenant',
    headers_field = 'extra',
    headers = '{"Source": "streamsql"}'
);
