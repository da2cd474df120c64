-- JetStream, exactly once: every order is stored in the stream ORDERS once, even if the
-- server or streamsql crashes and the script is run again.
--
-- Needs nats-server 2.12+ and the stream, created first with atomic publish allowed
-- (stream config: {"name": "ORDERS", "subjects": ["orders.>"], "allow_atomic": true}).
-- Orders that cannot be delivered go to the stream ORDERS_DLQ (subjects ["orders_dlq.>"])
-- with headers saying why.

CREATE CONNECTION nats FROM nats_sink WITH (
    servers = '${NATS_URL:-nats://127.0.0.1:4222}'
);

CREATE TABLE orders_stream (
    order_id BIGINT,
    subject VARCHAR,
    region VARCHAR,
    amount DOUBLE
) WITH (
    connector = 'nats_sink',
    connection = 'nats',
    stream = 'ORDERS',
    subject_field = 'subject',
    msg_id_field = 'order_id',
    delivery = 'exactly_once',
    on_error = 'dead_letter',
    dead_letter_subject = 'orders_dlq.rejected'
);

-- Order 13 has a subject with a space: it goes to the dead-letter stream, the rest to ORDERS.
INSERT INTO orders_stream
SELECT value AS order_id,
       CASE WHEN value = 13 THEN 'orders.bad subject'
            ELSE concat('orders.', CASE WHEN value % 2 = 0 THEN 'eu' ELSE 'us' END) END AS subject,
       CASE WHEN value % 2 = 0 THEN 'eu' ELSE 'us' END AS region,
       value * 9.99 AS amount
FROM generate_series(1, 5000)
ORDER BY order_id;
