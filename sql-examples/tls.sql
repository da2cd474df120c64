-- TLS with a private CA: the server's certificate is verified against tls_ca_file (there
-- is no way to skip verification). Add user/password, token, nkey or credentials as usual.
-- Run with: NATS_URL=tls://127.0.0.1:4222 NATS_CA=/path/ca.pem streamsql run sql-examples/tls.sql

CREATE CONNECTION secure_nats FROM nats_sink
WITH (servers = '${NATS_URL:-tls://127.0.0.1:4222}', tls = 'true', tls_ca_file = '${NATS_CA}');

INSERT INTO payments_out
SELECT id, concat('payments.', currency) AS subject, amount
FROM (VALUES (1, 'eur', 12.5), (2, 'usd', 40.0), (3, 'eur', 7.75)) AS t(id, currency, amount)
WITH (connector = 'nats_sink', connection = 'secure_nats', subject_field = 'subject',
      subject_prefix = 'payments.');
