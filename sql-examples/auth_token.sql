-- Token authentication: the server is configured with `authorization { token: "..." }`.
-- Run with: NATS_URL=nats://127.0.0.1:4222 NATS_TOKEN=... streamsql run sql-examples/auth_token.sql

CREATE CONNECTION secure_nats FROM nats_sink
WITH (servers = '${NATS_URL:-nats://127.0.0.1:4222}', token = '${NATS_TOKEN}');

INSERT INTO payments_out
SELECT id, concat('payments.', currency) AS subject, amount
FROM (VALUES (1, 'eur', 12.5), (2, 'usd', 40.0), (3, 'eur', 7.75)) AS t(id, currency, amount)
WITH (connector = 'nats_sink', connection = 'secure_nats', subject_field = 'subject',
      subject_prefix = 'payments.');
