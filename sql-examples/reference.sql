-- The reference example from the design, as written, after a small source for it to read.
-- It expects a server at nats://localhost:4222 that requires user 'publisher' with the
-- password in the environment variable NATS_PASSWORD.

CREATE VIEW processed_orders AS
SELECT * FROM (VALUES
    (101, '{"sku":"A-1","qty":2}'),
    (102, '{"sku":"B-7","qty":1}'),
    (103, '{"sku":"C-3","qty":5}')
) AS t(order_id, order_data);

CREATE CONNECTION nats_sink_conn FROM nats_sink
WITH (servers = '["nats://localhost:4222"]', username = 'publisher', password = '${NATS_PASSWORD}');

INSERT INTO nats_output
SELECT order_id, 'orders.processed' AS subject, order_data
FROM processed_orders
WITH (connector = 'nats_sink', connection = 'nats_sink_conn', subject_field = 'subject', format = 'json');
