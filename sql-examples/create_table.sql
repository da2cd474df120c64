-- The CREATE TABLE form: declare the sink's columns once, then INSERT into it as often as
-- you like. DataFusion checks each INSERT's column types against the declaration.
-- Static headers go on every message; reply subjects come from a column.

CREATE TABLE shipments (
    shipment_id BIGINT,
    subject VARCHAR,
    reply_to VARCHAR,
    carrier VARCHAR,
    weight_kg DOUBLE
) WITH (
    connector = 'nats_sink',
    servers = '${NATS_URL:-nats://127.0.0.1:4222}',
    subject_field = 'subject',
    reply_to_field = 'reply_to',
    headers = '{"source": "streamsql", "schema": "shipment.v1"}'
);

INSERT INTO shipments
SELECT value AS shipment_id,
       concat('shipments.', CASE WHEN value % 2 = 0 THEN 'ground' ELSE 'air' END) AS subject,
       concat('shipments.ack.', value) AS reply_to,
       CASE WHEN value % 2 = 0 THEN 'truck' ELSE 'plane' END AS carrier,
       value * 1.5 AS weight_kg
FROM generate_series(1, 10);
