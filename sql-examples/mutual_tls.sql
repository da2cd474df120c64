-- Mutual TLS: the sink proves who it is with a client certificate signed by a CA the
-- server trusts (`tls { verify: true }`), and checks the server's certificate itself.
-- Run with: NATS_URL=tls://127.0.0.1:4222 NATS_CA=ca.pem NATS_CLIENT_CERT=client.pem \
--           NATS_CLIENT_KEY=client-key.pem streamsql run sql-examples/mutual_tls.sql

CREATE CONNECTION secure_nats FROM nats_sink
WITH (servers = '${NATS_URL:-tls://127.0.0.1:4222}', tls_ca_file = '${NATS_CA}',
      tls_cert_file = '${NATS_CLIENT_CERT}', tls_key_file = '${NATS_CLIENT_KEY}');

INSERT INTO payments_out
SELECT id, concat('payments.', currency) AS subject, amount
FROM (VALUES (1, 'eur', 12.5), (2, 'usd', 40.0), (3, 'eur', 7.75)) AS t(id, currency, amount)
WITH (connector = 'nats_sink', connection = 'secure_nats', subject_field = 'subject',
      subject_prefix = 'payments.');
