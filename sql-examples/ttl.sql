-- Per-message TTL: each session token is stored in the stream SESSIONS for as long as its
-- row says (ttl_field), then removed by the server; the guest token lives 2 seconds.
-- Every row could get the same TTL with ttl = '1h' instead.
--
-- Needs nats-server 2.11+ and a stream that allows per-message TTLs, created first:
--   nats stream add SESSIONS --subjects 'sessions.>' --allow-msg-ttl
-- (stream config: {"name": "SESSIONS", "subjects": ["sessions.>"], "allow_msg_ttl": true};
-- an existing stream: nats stream edit SESSIONS --allow-msg-ttl).

CREATE CONNECTION nats FROM nats_sink WITH (
    servers = '${NATS_URL:-nats://127.0.0.1:4222}'
);

CREATE VIEW logins AS
SELECT * FROM (VALUES
        ('alice', 'tok-a', '1h'),
        ('bob', 'tok-b', '30m'),
        ('guest', 'tok-g', '2s')
     ) AS t(user_name, token, lifetime);

INSERT INTO sessions
SELECT concat('sessions.', user_name) AS subject,
       user_name,
       token,
       lifetime
FROM logins
WITH (
    connector = 'nats_sink',
    connection = 'nats',
    stream = 'SESSIONS',
    subject_field = 'subject',
    ttl_field = 'lifetime'
);
