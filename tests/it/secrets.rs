//! Secrets never leak: no password, token, nkey seed, user JWT, `.creds` file content or
//! TLS private key appears in anything `streamsql` prints, even with every log at
//! `trace` (async-nats' protocol traces included).
//!
//! Each authentication mode gets a real server configured for it and two runs of the
//! binary: one that succeeds (a connection with the secret written literally in the
//! SQL, an INSERT, its EXPLAIN and its EXPLAIN ANALYZE) and one that fails on a wrong
//! secret given inline on the INSERT's WITH. The succeeding run must really have
//! published (a subscriber gets the rows) and really have traced (the connection's
//! CONNECT is in the log), so that a clean output is not clean because nothing ran.

use crate::common;

use std::time::Duration;

use async_nats::ConnectOptions;
use common::leak::*;
use common::*;
use nats_testkit::{Collector, JwtAuth, NatsServer, Pki};

#[tokio::test]
async fn user_and_password_never_shown() {
    let wrong = "wrong-pw-5d1e-never-printed";
    let server = NatsServer::builder()
        .jetstream(false)
        .user("publisher", PASSWORD)
        .start();
    let subscriber = nats_testkit::connect_with_user(&server.url(), "publisher", PASSWORD).await;
    check(Mode {
        name: "password",
        server: &server,
        subscriber,
        good: format!("username = 'publisher', password = '{PASSWORD}'"),
        good_shown: vec!["password=***".into(), "username=publisher".into()],
        bad: format!("username = 'publisher', password = '{wrong}'"),
        bad_error: vec!["the server rejected user 'publisher' ('username'/'password')".into()],
        bad_sends_connect: true,
        secrets: vec![
            Secret::new("the password", PASSWORD),
            Secret::new("the wrong password", wrong),
        ],
    })
    .await;
}

#[tokio::test]
async fn token_never_shown() {
    let (token, wrong) = ("tok-91b2e4-never-printed", "wrong-tok-3c8d-never-printed");
    let server = NatsServer::builder().jetstream(false).token(token).start();
    let options = nats_testkit::connect_options().token(token.into());
    let subscriber = nats_testkit::connect_with(&server.url(), options).await;
    check(Mode {
        name: "token",
        server: &server,
        subscriber,
        good: format!("token = '{token}'"),
        good_shown: vec!["token=***".into()],
        bad: format!("token = '{wrong}'"),
        bad_error: vec!["the server rejected the 'token' (authorization violation)".into()],
        bad_sends_connect: true,
        secrets: vec![
            Secret::new("the token", token),
            Secret::new("the wrong token", wrong),
        ],
    })
    .await;
}

#[tokio::test]
async fn nkey_seed_never_shown() {
    let (user, stranger) = (nats_testkit::new_user_nkey(), nats_testkit::new_user_nkey());
    let server = NatsServer::builder()
        .jetstream(false)
        .nkey_user(user.public_key())
        .start();
    let options = nats_testkit::connect_options().nkey(user.seed().into());
    let subscriber = nats_testkit::connect_with(&server.url(), options).await;
    check(Mode {
        name: "nkey",
        server: &server,
        subscriber,
        good: format!("nkey_seed = '{}'", user.seed()),
        good_shown: vec!["nkey_seed=***".into()],
        bad: format!("nkey_seed = '{}'", stranger.seed()),
        bad_error: vec![format!(
            "the server rejected nkey {} ('nkey_seed') (authorization violation)",
            stranger.public_key()
        )],
        bad_sends_connect: true,
        secrets: vec![
            Secret::new("the seed", user.seed()),
            Secret::new("the other user's seed", stranger.seed()),
        ],
    })
    .await;
}

/// JWT and seed given apart. The failing run gives another user's seed with the JWT,
/// which the sink notices before it connects; a third run uses a user of an operator
/// the server does not trust, which the server refuses.
#[tokio::test]
async fn user_jwt_and_seed_never_shown() {
    let auth = JwtAuth::new();
    let server = NatsServer::builder()
        .jetstream(false)
        .operator(&auth)
        .start();
    let (bob, carol) = (auth.user("bob"), auth.user("carol"));
    let eve = JwtAuth::new().user("eve");
    let options = ConnectOptions::with_credentials(&auth.user("listener").creds()).unwrap();
    let subscriber = nats_testkit::connect_with(&server.url(), options).await;
    let url = server.url();
    let secrets = vec![
        Secret::jwt("bob's JWT", bob.jwt()),
        Secret::new("bob's seed", bob.seed()),
        Secret::new("carol's seed", carol.seed()),
        Secret::jwt("eve's JWT", eve.jwt()),
        Secret::new("eve's seed", eve.seed()),
    ];
    check(Mode {
        name: "jwt",
        server: &server,
        subscriber,
        good: format!("jwt = '{}', nkey_seed = '{}'", bob.jwt(), bob.seed()),
        good_shown: vec!["jwt=***".into(), "nkey_seed=***".into()],
        bad: format!("jwt = '{}', nkey_seed = '{}'", bob.jwt(), carol.seed()),
        bad_error: vec![
            "option 'jwt': the JWT in 'jwt' is for user 'bob'".into(),
            format!("but the seed is for {}", carol.public_key()),
        ],
        bad_sends_connect: false,
        secrets: secrets.clone(),
    })
    .await;

    let script = format!(
        "{} WITH (connector = 'nats_sink', servers = '{url}', jwt = '{}', nkey_seed = '{}', \
         subject_field = 'subj', retry_timeout = '5s');",
        select("jwt"),
        eve.jwt(),
        eve.seed()
    );
    let foreign = run_with_args(&["--log-level", "trace", "run", "-"], &script, &[]);
    assert_fails_with(
        &foreign,
        &[&format!(
            "the server rejected user 'eve' ({}) from 'jwt' (authorization violation)",
            eve.public_key()
        )],
    );
    assert_traced_a_connect(&foreign, "jwt, foreign user", false);
    assert_no_secret(&foreign, "jwt, foreign user", &secrets);
}

/// A `.creds` file: neither the JWT nor the seed in it may appear. The failing run uses
/// an expired user's file (refused before connecting); a third run a revoked user's
/// (refused by the server).
#[tokio::test]
async fn credentials_file_contents_never_shown() {
    let mut auth = JwtAuth::new();
    let revoked = auth.revoked_user("mallory");
    let server = NatsServer::builder()
        .jetstream(false)
        .operator(&auth)
        .start();
    let (alice, expired) = (auth.user("alice"), auth.expired_user("old"));
    let options = ConnectOptions::with_credentials(&auth.user("listener").creds()).unwrap();
    let subscriber = nats_testkit::connect_with(&server.url(), options).await;
    let url = server.url();
    let mut secrets = Vec::new();
    for user in [&alice, &expired, &revoked] {
        // What the file holds, not what the testkit says it wrote.
        let creds = std::fs::read_to_string(user.creds_file()).unwrap();
        assert!(creds.contains(user.jwt()) && creds.contains(user.seed()));
        let name = user.name();
        secrets.push(Secret::jwt(format!("{name}'s creds file JWT"), user.jwt()));
        secrets.push(Secret::new(
            format!("{name}'s creds file seed"),
            user.seed(),
        ));
    }
    let path = |user: &nats_testkit::JwtUser| user.creds_file().display().to_string();
    check(Mode {
        name: "creds",
        server: &server,
        subscriber,
        good: format!("credentials_file = '{}'", path(&alice)),
        good_shown: vec![format!("credentials_file={}", path(&alice))],
        bad: format!("credentials_file = '{}'", path(&expired)),
        bad_error: vec![
            "option 'credentials_file': the JWT of user 'old'".into(),
            format!("in 'credentials_file' ('{}') expired at", path(&expired)),
        ],
        bad_sends_connect: false,
        secrets: secrets.clone(),
    })
    .await;

    let script = format!(
        "{} WITH (connector = 'nats_sink', servers = '{url}', credentials_file = '{}', \
         subject_field = 'subj', retry_timeout = '5s');",
        select("creds"),
        path(&revoked)
    );
    let refused = run_with_args(&["--log-level", "trace", "run", "-"], &script, &[]);
    assert_fails_with(
        &refused,
        &[
            "the server rejected user 'mallory'",
            &format!("from 'credentials_file' ('{}')", path(&revoked)),
            "the user may have been revoked",
        ],
    );
    assert_traced_a_connect(&refused, "creds, revoked user", false);
    assert_no_secret(&refused, "creds, revoked user", &secrets);
}

/// Mutual TLS: the client key's PEM body never appears; the failing run presents a
/// certificate from a CA the server does not trust.
#[tokio::test]
async fn tls_client_key_never_shown() {
    let pki = Pki::new();
    let server = NatsServer::builder()
        .jetstream(false)
        .tls(&pki)
        .tls_verify_clients(true)
        .start();
    let options = nats_testkit::mutual_tls_options(&pki);
    let subscriber = nats_testkit::connect_with(&server.url(), options).await;
    let [ca, cert, key, other_cert, other_key] = [
        pki.ca_file(),
        pki.client_cert_file(),
        pki.client_key_file(),
        pki.untrusted_client_cert_file(),
        pki.untrusted_client_key_file(),
    ]
    .map(|p| p.display().to_string());
    check(Mode {
        name: "tls",
        server: &server,
        subscriber,
        good: format!(
            "tls_ca_file = '{ca}', tls_cert_file = '{cert}', tls_key_file = '{key}', tls = 'true'"
        ),
        good_shown: vec![format!("tls_key_file={key}")],
        bad: format!(
            "tls_ca_file = '{ca}', tls_cert_file = '{other_cert}', tls_key_file = '{other_key}'"
        ),
        bad_error: vec![format!(
            "TLS: the server refused the client certificate in 'tls_cert_file' ('{other_cert}')"
        )],
        bad_sends_connect: true,
        secrets: vec![
            Secret::pem_key("the client key", &pki.client_key_file()),
            Secret::pem_key("the untrusted client key", &pki.untrusted_client_key_file()),
        ],
    })
    .await;
}

/// Sinks declared with `CREATE TABLE ... WITH` and with DataFusion's own `CREATE EXTERNAL
/// TABLE ... OPTIONS`: the token is in neither the plans nor `SHOW CREATE TABLE`.
#[tokio::test]
async fn declared_sinks_never_show_the_token() {
    let token = "tok-declared-e27a-never-printed";
    let server = NatsServer::builder().jetstream(false).token(token).start();
    let options = nats_testkit::connect_options().token(token.into());
    let subscriber = nats_testkit::connect_with(&server.url(), options).await;
    let mut received = Collector::subscribe(&subscriber, "secrets.>").await;
    let url = server.url();
    let declared = insert_into("declared", "declared");
    let external = insert_into("ext_sink", "external");
    let script = format!(
        "CREATE TABLE declared (id BIGINT, v VARCHAR, subj VARCHAR) WITH (connector = 'nats_sink', \
         servers = '{url}', token = '{token}', subject_field = 'subj');\n\
         {declared};\nEXPLAIN ANALYZE {declared};\nSHOW CREATE TABLE declared;\n\
         CREATE EXTERNAL TABLE ext_sink (id BIGINT, v VARCHAR, subj VARCHAR) STORED AS NATS_SINK \
         LOCATION '{url}' OPTIONS ('token' '{token}', 'subject_field' 'subj');\n\
         {external};\nEXPLAIN {external};\nSHOW CREATE TABLE ext_sink;\n"
    );
    let run = "declared sinks";
    let output = run_with_args(&["--log-level", "trace", "run", "-"], &script, &[]);
    assert!(
        output.status.success(),
        "{run} failed:\n{}",
        errors(&output)
    );
    let out = stdout(&output);
    assert_eq!(inserted_rows(&out, "declared"), 3, "{out}");
    assert_eq!(inserted_rows(&out, "ext_sink"), 3, "{out}");
    assert_eq!(
        out.matches("token=***").count(),
        2,
        "both plans show the sink:\n{out}"
    );
    assert_eq!(
        out.matches("| ext_sink ").count(),
        1,
        "SHOW CREATE TABLE ran:\n{out}"
    );
    assert_traced_a_connect(&output, run, true);
    assert_no_secret(&output, run, &[Secret::new("the token", token)]);
    let messages = received.collect(9, Duration::from_secs(5)).await;
    let got: Vec<String> = messages
        .iter()
        .map(|m| format!("{} {}", m.subject, text(m)))
        .collect();
    let expected = [rows("declared"), rows("declared"), rows("external")].concat();
    assert_eq!(got, expected, "{run}");
}

/// `streamsql connectors` lists the credential options and marks the secret ones;
/// the file options say their contents are never shown.
#[test]
fn connectors_lists_which_options_are_secret() {
    let output = run_with_args(&["--log-level", "trace", "connectors"], "", &[]);
    assert!(output.status.success(), "stderr:\n{}", stderr(&output));
    let out = stdout(&output);
    let row = |option: &str| -> Vec<String> {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(option))
            .unwrap_or_else(|| panic!("no row for {option}:\n{out}"));
        line.split_whitespace().map(str::to_string).collect()
    };
    // OPTION SCOPE DEFAULT SECRET DESCRIPTION...
    for option in ["password", "token", "nkey_seed", "jwt"] {
        assert_eq!(row(option)[3], "yes", "{option} is secret:\n{out}");
    }
    for option in [
        "username",
        "credentials_file",
        "nkey_seed_file",
        "tls_key_file",
    ] {
        assert_eq!(row(option)[3], "no", "{option} (a name or a path):\n{out}");
    }
    for option in ["credentials_file", "tls_key_file"] {
        assert!(
            row(option).join(" ").contains("contents are never shown"),
            "{option}:\n{out}"
        );
    }
}

/// A password read from the environment (`${VAR}`): the same at trace level, on success
/// and on failure.
#[tokio::test]
async fn no_secret_in_output_at_trace_level_on_success_or_failure() {
    let server = NatsServer::builder().user("publisher", PASSWORD).start();
    let client = nats_testkit::connect_with_user(&server.url(), "publisher", PASSWORD).await;
    let mut received = Collector::subscribe(&client, "secret.test").await;
    let script = format!(
        "CREATE CONNECTION c FROM nats_sink WITH (servers = '{}', username = 'publisher', password = '${{SINK_PW}}');
         EXPLAIN INSERT INTO out SELECT 1 AS id WITH (connection = 'c', subject = 'secret.test');
         INSERT INTO out SELECT 1 AS id WITH (connection = 'c', subject = 'secret.test');",
        server.url()
    );
    let run = |password: &str| {
        run_with_args(
            &["--log-level", "trace", "run", "-"],
            &script,
            &[("SINK_PW", password)],
        )
    };

    let ok = run(PASSWORD);
    assert!(ok.status.success(), "{}", errors(&ok));
    assert_traced_a_connect(&ok, "password from the environment", true);
    assert!(
        stdout(&ok).contains("NatsSink:"),
        "EXPLAIN shows the sink:\n{}",
        stdout(&ok)
    );
    let wrong = "wrong-5d1e-never-printed";
    let secrets = [
        Secret::new("the password", PASSWORD),
        Secret::new("the wrong password", wrong),
    ];
    assert_no_secret(&ok, "password from the environment", &secrets);
    assert_eq!(received.collect(1, Duration::from_secs(5)).await.len(), 1);

    let failed = run(wrong);
    assert_fails_with(&failed, &["rejected user 'publisher'"]);
    assert_no_secret(&failed, "wrong password from the environment", &secrets);
}
