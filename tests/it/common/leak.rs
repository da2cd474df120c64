//! The leak check behind `tests/it/secrets.rs`: secrets and their distinctive parts, the
//! two runs (succeeding and failing) of each authentication mode, and the assertions that
//! the output is clean and that the run really traced and published.

use std::process::Output;
use std::time::Duration;

use async_nats::Client;
use nats_testkit::{Collector, NatsServer};

use super::*;

pub const PASSWORD: &str = "pw-7f3a9c-never-printed";

/// A secret value and the pieces of it that must not appear either.
#[derive(Clone)]
pub struct Secret {
    pub what: String,
    /// The value itself, then distinctive parts of it (a JWT's claims and signature, a
    /// PEM key's lines), so that a partly printed secret is caught as well.
    pub needles: Vec<String>,
}

impl Secret {
    pub fn new(what: impl Into<String>, value: impl Into<String>) -> Secret {
        Secret {
            what: what.into(),
            needles: vec![value.into()],
        }
    }

    /// A user JWT: also its claims and its signature on their own (the header is the
    /// same in every JWT, and no secret).
    pub fn jwt(what: impl Into<String>, jwt: &str) -> Secret {
        let mut needles = vec![jwt.to_string()];
        needles.extend(jwt.split('.').skip(1).map(str::to_string));
        assert_eq!(needles.len(), 3, "not a JWT: {jwt}");
        Secret {
            what: what.into(),
            needles,
        }
    }

    /// A PEM private key file: its base64 body, in one piece and line by line (every
    /// line of a P-256 PKCS#8 key holds key material).
    pub fn pem_key(what: impl Into<String>, path: &std::path::Path) -> Secret {
        let pem = std::fs::read_to_string(path).unwrap();
        let lines: Vec<String> = pem
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("-----"))
            .map(str::to_string)
            .collect();
        assert!(!lines.is_empty(), "no PEM body in {pem}");
        let mut needles = vec![lines.concat(), lines.join("\n")];
        needles.extend(lines);
        Secret {
            what: what.into(),
            needles,
        }
    }
}

/// Asserts that no secret, nor any part of one, is in `output`'s stdout or stderr; the
/// message quotes the offending lines only (a trace log is long).
pub fn assert_no_secret(output: &Output, run: &str, secrets: &[Secret]) {
    for (stream, text) in [("stdout", stdout(output)), ("stderr", stderr(output))] {
        for secret in secrets {
            for needle in &secret.needles {
                let lines: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
                assert!(
                    lines.is_empty(),
                    "{run}: {stream} shows {} ({needle:?}) in {} line(s), e.g.:\n{}",
                    secret.what,
                    lines.len(),
                    lines.iter().take(5).copied().collect::<Vec<_>>().join("\n")
                );
            }
        }
    }
}

/// The error lines and the end of a run's stderr: a trace log is too long to show whole.
pub fn errors(output: &Output) -> String {
    let err = stderr(output);
    let lines: Vec<&str> = err.lines().collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("error") || l.contains(" ERROR ") || l.contains(" WARN "))
        .collect();
    let tail = &lines[lines.len().saturating_sub(20)..];
    format!(
        "exit {:?}; errors and warnings:\n{}\n... last lines of stderr:\n{}",
        output.status.code(),
        errors.join("\n"),
        tail.join("\n")
    )
}

/// Asserts the run logged at trace level, async-nats' protocol traces included, up to
/// the CONNECT it sent (where credentials travel), and for a run that `connected`, the
/// sink's own logs too: otherwise a clean log would prove nothing.
pub fn assert_traced_a_connect(output: &Output, run: &str, connected: bool) {
    let err = stderr(output);
    // Lines inside a sink carry its span (`sink{connector=nats_sink table=...}: `)
    // before the target.
    let mut needles = vec![
        " DEBUG streamsql::engine",
        "async_nats::connection: write operation: CONNECT",
    ];
    if connected {
        needles.push("connector_nats::connect: nats_sink: connected");
    }
    for needle in needles {
        assert!(
            err.contains(needle),
            "{run}: the trace log lacks {needle:?}:\n{}",
            errors(output)
        );
    }
}

/// An INSERT into `leak_check` of three rows to `secrets.<mode>.<id>`.
pub fn select(mode: &str) -> String {
    insert_into("leak_check", mode)
}

/// An INSERT into `table` of three rows to `secrets.<mode>.<id>`. (The VALUES has as many
/// columns as the SELECT: DataFusion 55 checks a VALUES inside an INSERT against the
/// target's column count.)
pub fn insert_into(table: &str, mode: &str) -> String {
    format!(
        "INSERT INTO {table} SELECT id, v, concat('secrets.{mode}.', k) AS subj \
         FROM (VALUES (1, 'a', '1'), (2, 'b', '2'), (3, 'c', '3')) AS t(id, v, k)"
    )
}

/// What a subscriber receives from [`insert_into`]`(_, mode)`: subject and payload.
pub fn rows(mode: &str) -> Vec<String> {
    [(1, "a"), (2, "b"), (3, "c")]
        .map(|(id, v)| format!(r#"secrets.{mode}.{id} {{"id":{id},"v":"{v}"}}"#))
        .to_vec()
}

/// One authentication mode: a server that requires it and a subscriber admitted by it.
pub struct Mode<'a> {
    /// Subject token and label.
    pub name: &'static str,
    pub server: &'a NatsServer,
    pub subscriber: Client,
    /// Options for `CREATE CONNECTION`, with the right secrets written literally.
    pub good: String,
    /// `key=***` (or `key=path`) the plans must show for `good`.
    pub good_shown: Vec<String>,
    /// Inline options for an INSERT that must fail, with wrong secrets.
    pub bad: String,
    /// Every needle the failing run's error must contain.
    pub bad_error: Vec<String>,
    /// Whether the failing run gets as far as sending CONNECT (a wrong secret the sink
    /// cannot tell from a right one before the server says so).
    pub bad_sends_connect: bool,
    /// Every secret in play, right and wrong.
    pub secrets: Vec<Secret>,
}

/// The two runs of `mode`.
pub async fn check(mode: Mode<'_>) {
    let Mode {
        name,
        server,
        subscriber,
        good,
        good_shown,
        bad,
        bad_error,
        bad_sends_connect,
        secrets,
    } = mode;
    let mut received = Collector::subscribe(&subscriber, format!("secrets.{name}.>")).await;
    let insert = format!(
        "{} WITH (connector = 'nats_sink', connection = 'c', subject_field = 'subj')",
        select(name)
    );
    let script = format!(
        "CREATE CONNECTION c FROM nats_sink WITH (servers = '{}', {good});\n\
         {insert};\nEXPLAIN {insert};\nEXPLAIN ANALYZE {insert};\n",
        server.url()
    );
    let run = format!("{name}, succeeding run");
    let ok = run_with_args(&["--log-level", "trace", "run", "-"], &script, &[]);
    assert!(ok.status.success(), "{run} failed:\n{}", errors(&ok));
    let out = stdout(&ok);
    assert_eq!(inserted_rows(&out, "leak_check"), 3, "{run}:\n{out}");
    assert!(
        out.contains("DataSinkExec: sink=NatsSink:")
            && out.contains("Plan with Metrics")
            && out.contains("published_rows=3"),
        "{run}: EXPLAIN and EXPLAIN ANALYZE show the sink:\n{out}"
    );
    for shown in &good_shown {
        assert!(
            out.contains(shown.as_str()),
            "{run}: no {shown:?} in:\n{out}"
        );
    }
    assert_traced_a_connect(&ok, &run, true);
    assert_no_secret(&ok, &run, &secrets);
    // The INSERT and the EXPLAIN ANALYZE published; plain EXPLAIN did not.
    let messages = received.collect(6, Duration::from_secs(5)).await;
    let got: Vec<String> = messages
        .iter()
        .map(|m| format!("{} {}", m.subject, text(m)))
        .collect();
    assert_eq!(got, [rows(name), rows(name)].concat(), "{run}");

    let inline = format!(
        "{} WITH (connector = 'nats_sink', servers = '{}', {bad}, subject_field = 'subj', \
         retry_timeout = '5s')",
        select(name),
        server.url()
    );
    let script = format!("EXPLAIN {inline};\n{inline};\n");
    let run = format!("{name}, failing run");
    let failed = run_with_args(&["--log-level", "trace", "run", "-"], &script, &[]);
    let mut needles = vec!["error: statement 2 (line 2): "];
    needles.extend(bad_error.iter().map(String::as_str));
    assert_fails_with(&failed, &needles);
    assert!(
        stdout(&failed).contains("DataSinkExec: sink=NatsSink:"),
        "{run}: the EXPLAIN ran:\n{}",
        stdout(&failed)
    );
    if bad_sends_connect {
        assert_traced_a_connect(&failed, &run, false);
    } else {
        assert!(
            stderr(&failed).contains(" DEBUG streamsql::engine"),
            "{run}: not traced:\n{}",
            errors(&failed)
        );
    }
    assert_no_secret(&failed, &run, &secrets);
    let late = received
        .collect_until_idle(Duration::from_millis(200))
        .await;
    assert!(late.is_empty(), "{run} published {} message(s)", late.len());
}
