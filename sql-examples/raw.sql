-- Raw payloads: the message is the bytes of one column, unchanged (format = 'raw'), here
-- a pre-rendered CSV line and a binary blob; the other columns route the message, give
-- it a message id and a header. A null payload is undeliverable (on_error decides).
-- Run with: NATS_URL=nats://127.0.0.1:4222 streamsql run sql-examples/raw.sql
-- and watch with: streamsql sub 'exports.>' --server "$NATS_URL"

CREATE CONNECTION local_nats FROM nats_sink
WITH (servers = '${NATS_URL:-nats://127.0.0.1:4222}');

CREATE VIEW rendered AS
SELECT * FROM (VALUES
        (1, 'csv', CAST('1,alice,30.50' AS BYTEA)),
        (2, 'bin', X'00FF10'),
        (3, 'csv', CAST('3,carol,7.25' AS BYTEA))
     ) AS t(id, kind, body);

INSERT INTO exports
SELECT concat('exports.', kind) AS subject,
       concat('export-', id) AS export_id,
       kind AS content_kind,
       body
FROM rendered
WITH (
    connector = 'nats_sink',
    connection = 'local_nats',
    subject_field = 'subject',
    format = 'raw',
    payload_field = 'body',
    header_fields = 'content_kind',
    msg_id_field = 'export_id'
);
