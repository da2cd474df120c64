-- Decentralized JWT authentication (operator mode) with a credentials file, as written
-- by `nsc generate creds`: the user's JWT and nkey seed in one file.
-- Run with: NATS_URL=... NATS_CREDS=/path/user.creds streamsql run sql-examples/auth_credentials_file.sql

CREATE CONNECTION secure_nats FROM nats_sink
WITH (servers = '${NATS_URL:-nats://127.0.0.1:4222}', credentials_file = '${NATS_CREDS}');

INSERT INTO payments_out
SELECT id, concat('payments.', currency) AS subject, amount
FROM (VALUES (1, 'eur', 12.5), (2, 'usd', 40.0), (3, 'eur', 7.75)) AS t(id, currency, amount)
WITH (connector = 'nats_sink', connection = 'secure_nats', subject_field = 'subject',
      subject_prefix = 'payments.');
