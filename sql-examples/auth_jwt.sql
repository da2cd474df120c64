-- Decentralized JWT authentication with the user JWT and seed given apart, e.g. when a
-- secrets manager hands out the JWT and the seed lives in a file.
-- Run with: NATS_URL=... NATS_USER_JWT=eyJ... NATS_NKEY_SEED_FILE=/path/user.nk \
--           streamsql run sql-examples/auth_jwt.sql

CREATE CONNECTION secure_nats FROM nats_sink
WITH (servers = '${NATS_URL:-nats://127.0.0.1:4222}', jwt = '${NATS_USER_JWT}',
      nkey_seed_file = '${NATS_NKEY_SEED_FILE}');

INSERT INTO payments_out
SELECT id, concat('payments.', currency) AS subject, amount
FROM (VALUES (1, 'eur', 12.5), (2, 'usd', 40.0), (3, 'eur', 7.75)) AS t(id, currency, amount)
WITH (connector = 'nats_sink', connection = 'secure_nats', subject_field = 'subject',
      subject_prefix = 'payments.');
