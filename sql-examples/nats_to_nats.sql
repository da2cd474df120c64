-- NATS in, SQL, NATS out: every order stored in the stream ORDERS (subjects orders.>)
-- up to now is read once, priced, and stored in the stream BILLING (subjects billing.>).
--
-- The durable consumer 'billing_etl' remembers where the last run ended: its messages are
-- acknowledged only after the INSERT's sink confirmed every row, so a run that fails is
-- simply run again (message ids from the source sequence let BILLING drop what it already
-- holds). One connection serves the source and the sink.

CREATE CONNECTION nats FROM nats_sink WITH (
    servers = '${NATS_URL:-nats://127.0.0.1:4222}'
);

CREATE TABLE orders_in (
    order_id BIGINT,
    region VARCHAR,
    amount DOUBLE,
    _subject VARCHAR,
    _sequence BIGINT
) WITH (
    connector = 'nats_source',
    connection = 'nats',
    stream = 'ORDERS',
    consumer = 'billing_etl',
    stop_at = 'end',
    on_error = 'dead_letter',
    dead_letter_subject = 'orders_dlq.undecodable'
);

INSERT INTO billing
SELECT order_id,
       amount * 1.2 AS gross,
       _subject AS ordered_on,
       concat('billing.', region) AS subject,
       concat('orders-', _sequence) AS id
FROM orders_in
WHERE amount > 10
WITH (connector = 'nats_sink', connection = 'nats', subject_field = 'subject',
      stream = 'BILLING', msg_id_field = 'id');
