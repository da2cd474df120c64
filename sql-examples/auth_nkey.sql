-- NKey authentication: the server lists the user's public key
-- (`authorization { users: [ { nkey: "U..." } ] }`); the sink signs the server's
-- challenge with the user's seed, which never leaves this machine.
-- Run with: NATS_URL=... NATS_NKEY_SEED_FILE=/path/user.nk streamsql run sql-examples/auth_nkey.sql
-- (or give the seed itself with nkey_seed = '${NATS_NKEY_SEED}').

CREATE CONNECTION secure_nats FROM nats_sink
WITH (servers = '${NATS_URL:-nats://127.0.0.1:4222}', nkey_seed_file = '${NATS_NKEY_SEED_FILE}');

INSERT INTO payments_out
SELECT id, concat('payments.', currency) AS subject, amount
FROM (VALUES (1, 'eur', 12.5), (2, 'usd', 40.0), (3, 'eur', 7.75)) AS t(id, currency, amount)
WITH (connector = 'nats_sink', connection = 'secure_nats', subject_field = 'subject',
      subject_prefix = 'payments.');
