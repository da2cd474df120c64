-- Quickstart: five orders become five JSON messages, routed by region.
-- Run with: NATS_URL=nats://127.0.0.1:4222 streamsql run sql-examples/quickstart.sql
-- and watch with: streamsql sub 'orders.>' --server "$NATS_URL"

CREATE CONNECTION local_nats FROM nats_sink
WITH (servers = '${NATS_URL:-nats://127.0.0.1:4222}');

INSERT INTO orders_out
SELECT id AS order_id,
       concat('orders.', region) AS subject,
       customer,
       amount
FROM (VALUES
        (1, 'eu', 'alice', 30.50),
        (2, 'us', 'bob', 12.00),
        (3, 'eu', 'carol', 7.25),
        (4, 'apac', 'dave', 99.99),
        (5, 'us', 'erin', 5.00)
     ) AS t(id, region, customer, amount)
WITH (connector = 'nats_sink', connection = 'local_nats', subject_field = 'subject');
