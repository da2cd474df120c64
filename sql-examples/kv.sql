-- A key-value bucket kept equal to a changelog: each row puts its value (the row's other
-- columns as JSON) under its key (key_field), or deletes or purges the key (op_field).
-- Rows of one key are applied in row order, also when something is sent again.
--
-- Needs the bucket, created first:
--   nats kv add profiles
-- Run with: NATS_URL=nats://127.0.0.1:4222 streamsql run sql-examples/kv.sql
-- and read a key back with: nats kv get profiles user.1

CREATE CONNECTION nats FROM nats_sink WITH (
    servers = '${NATS_URL:-nats://127.0.0.1:4222}'
);

CREATE VIEW profile_changes AS
SELECT * FROM (VALUES
        (1, 'user.1', 'put', 'alice', 'free'),
        (2, 'user.2', 'put', 'bob', 'free'),
        (3, 'user.1', 'put', 'alice', 'pro'),
        (4, 'user.3', 'put', 'carol', 'free'),
        (5, 'user.2', 'delete', NULL, NULL),
        (6, 'user.3', 'purge', NULL, NULL)
     ) AS t(seq, user_key, change, name, plan);

INSERT INTO profiles
SELECT user_key, change, name, plan
FROM profile_changes
ORDER BY seq
WITH (
    connector = 'nats_kv',
    connection = 'nats',
    bucket = 'profiles',
    key_field = 'user_key',
    op_field = 'change'
);
