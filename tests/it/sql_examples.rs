//! Every file in `sql-examples/` run by the `streamsql` binary against a real nats-server,
//! checking what a subscriber receives.

use crate::common;

use std::time::Duration;

use common::leak::{Secret, assert_no_secret};
use common::*;
use nats_testkit::{Collector, NatsServer, payload_json};

/// The reference example runs as written against a server that requires user `publisher`
/// with the password from `NATS_PASSWORD`; only the server address is the test's own.
#[tokio::test]
async fn reference_example_as_written_with_password_from_the_environment() {
    let server = NatsServer::builder().user("publisher", "s3cret-pw").start();
    let client = nats_testkit::connect_with_user(&server.url(), "publisher", "s3cret-pw").await;
    let mut received = Collector::subscribe(&client, "orders.processed").await;

    let script = with_servers(&example("reference.sql"), &server.url());
    let output = run_script(&script, &[("NATS_PASSWORD", "s3cret-pw")]);
    assert!(output.status.success(), "stderr:\n{}", stderr(&output));
    assert_eq!(inserted_rows(&stdout(&output), "nats_output"), 3);

    let messages = received.collect(3, Duration::from_secs(5)).await;
    let payloads: Vec<String> = messages.iter().map(text).collect();
    assert_eq!(
        payloads,
        vec![
            r#"{"order_id":101,"order_data":"{\"sku\":\"A-1\",\"qty\":2}"}"#,
            r#"{"order_id":102,"order_data":"{\"sku\":\"B-7\",\"qty\":1}"}"#,
            r#"{"order_id":103,"order_data":"{\"sku\":\"C-3\",\"qty\":5}"}"#,
        ]
    );
    let secret_seen =
        stdout(&output).contains("s3cret-pw") || stderr(&output).contains("s3cret-pw");
    assert!(!secret_seen, "the password appeared in the output");
}

#[tokio::test]
async fn quickstart_publishes_five_orders_routed_by_region() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    let mut received = Collector::subscribe(&client, "orders.>").await;

    let output = run_script(&example("quickstart.sql"), &[("NATS_URL", &server.url())]);
    assert!(output.status.success(), "stderr:\n{}", stderr(&output));

    let messages = received.collect(5, Duration::from_secs(5)).await;
    let subjects: Vec<&str> = messages.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "orders.eu",
            "orders.us",
            "orders.eu",
            "orders.apac",
            "orders.us"
        ]
    );
    assert_eq!(
        text(&messages[0]),
        r#"{"order_id":1,"customer":"alice","amount":30.5}"#
    );
}

/// CREATE TABLE form: DataFusion checks the INSERT against the declared columns; every
/// message carries the static headers; each row's reply subject comes from a column and a
/// responder's answers arrive there.
#[tokio::test]
async fn create_table_with_static_headers_and_reply_to_answered_by_a_responder() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    let mut received = Collector::subscribe(&client, "shipments.ground").await;
    let mut acks = Collector::subscribe(&client, "shipments.ack.>").await;

    // A responder answers every air shipment on its reply subject.
    let mut requests = client.subscribe("shipments.air").await.unwrap();
    let responder_client = client.clone();
    let responder = tokio::spawn(async move {
        use futures::StreamExt;
        let mut answered = 0;
        while let Some(request) = requests.next().await {
            let reply = request
                .reply
                .clone()
                .expect("every shipment has a reply subject");
            let id = payload_json(&request)["shipment_id"].clone();
            responder_client
                .publish(reply, format!("ack {id}").into())
                .await
                .unwrap();
            answered += 1;
            if answered == 5 {
                break;
            }
        }
        answered
    });
    nats_testkit::round_trip(&client).await;

    let output = run_script(&example("create_table.sql"), &[("NATS_URL", &server.url())]);
    assert!(output.status.success(), "stderr:\n{}", stderr(&output));
    assert_eq!(inserted_rows(&stdout(&output), "shipments"), 10);

    let ground = received.collect(5, Duration::from_secs(5)).await;
    for (message, id) in ground.iter().zip([2, 4, 6, 8, 10]) {
        let headers = message.headers.as_ref().expect("static headers");
        assert_eq!(headers.get("source").map(|v| v.as_str()), Some("streamsql"));
        assert_eq!(
            headers.get("schema").map(|v| v.as_str()),
            Some("shipment.v1")
        );
        assert_eq!(
            message.reply.as_deref(),
            Some(format!("shipments.ack.{id}").as_str())
        );
        // Routing columns are not in the payload by default.
        assert_eq!(
            text(message),
            format!(
                r#"{{"shipment_id":{id},"carrier":"truck","weight_kg":{:?}}}"#,
                id as f64 * 1.5
            )
        );
    }
    assert_eq!(responder.await.unwrap(), 5);
    let answers = acks.collect(5, Duration::from_secs(5)).await;
    let mut answered: Vec<String> = answers
        .iter()
        .map(|m| format!("{} {}", m.subject, text(m)))
        .collect();
    answered.sort();
    assert_eq!(
        answered,
        ["1", "3", "5", "7", "9"].map(|id| format!("shipments.ack.{id} ack {id}"))
    );
}

/// Runs a `payments` example (the auth and TLS examples all publish the same three rows)
/// as written, with only `envs` set, and checks that `subscriber`, admitted by the
/// server the same way as the sink, receives exactly the three messages; no value of
/// `secrets` may appear in what `streamsql` prints.
async fn run_payments_example(
    name: &str,
    subscriber: &async_nats::Client,
    envs: &[(&str, String)],
    secrets: &[Secret],
) {
    let mut received = Collector::subscribe(subscriber, "payments.>").await;
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let output = run_script(&example(name), &envs);
    assert!(
        output.status.success(),
        "{name}: exit {:?}; stderr:\n{}",
        output.status.code(),
        stderr(&output)
    );
    assert_eq!(inserted_rows(&stdout(&output), "payments_out"), 3, "{name}");

    let messages = received.collect(3, Duration::from_secs(5)).await;
    let got: Vec<String> = messages
        .iter()
        .map(|m| format!("{} {}", m.subject, text(m)))
        .collect();
    assert_eq!(
        got,
        [
            r#"payments.eur {"id":1,"amount":12.5}"#,
            r#"payments.usd {"id":2,"amount":40.0}"#,
            r#"payments.eur {"id":3,"amount":7.75}"#,
        ],
        "{name}"
    );
    let more = received
        .collect_until_idle(Duration::from_millis(200))
        .await;
    assert!(more.is_empty(), "{name}: {} more message(s)", more.len());
    assert_no_secret(&output, name, secrets);
}

/// A server in operator mode (decentralized JWT auth) and a subscriber admitted by it.
async fn operator_server() -> (nats_testkit::JwtAuth, NatsServer, async_nats::Client) {
    let auth = nats_testkit::JwtAuth::new();
    let server = NatsServer::builder()
        .jetstream(false)
        .operator(&auth)
        .start();
    let listener = auth.user("listener");
    let options = async_nats::ConnectOptions::with_credentials(&listener.creds()).unwrap();
    let subscriber = nats_testkit::connect_with(&server.url(), options).await;
    (auth, server, subscriber)
}

/// A file holding `content` in a fresh temporary directory (kept alive by the caller).
fn write_temp(dir: &tempfile::TempDir, name: &str, content: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, content).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn auth_token_example_with_the_token_from_the_environment() {
    let token = "example-token-4b1f";
    let server = NatsServer::builder().jetstream(false).token(token).start();
    let options = nats_testkit::connect_options().token(token.into());
    let subscriber = nats_testkit::connect_with(&server.url(), options).await;

    let envs = [
        ("NATS_URL", server.url()),
        ("NATS_TOKEN", token.to_string()),
    ];
    let secrets = [Secret::new("the token", token)];
    run_payments_example("auth_token.sql", &subscriber, &envs, &secrets).await;
}

#[tokio::test]
async fn auth_nkey_example_with_the_seed_in_a_file() {
    let user = nats_testkit::new_user_nkey();
    let server = NatsServer::builder()
        .jetstream(false)
        .nkey_user(user.public_key())
        .start();
    let options = nats_testkit::connect_options().nkey(user.seed().into());
    let subscriber = nats_testkit::connect_with(&server.url(), options).await;
    let dir = tempfile::tempdir().unwrap();
    let seed_file = write_temp(&dir, "user.nk", &format!("{}\n", user.seed()));

    let envs = [
        ("NATS_URL", server.url()),
        ("NATS_NKEY_SEED_FILE", seed_file),
    ];
    let secrets = [Secret::new("the seed", user.seed())];
    run_payments_example("auth_nkey.sql", &subscriber, &envs, &secrets).await;
}

#[tokio::test]
async fn auth_credentials_file_example_with_a_creds_file() {
    let (auth, server, subscriber) = operator_server().await;
    let user = auth.user("payments");

    let envs = [
        ("NATS_URL", server.url()),
        ("NATS_CREDS", user.creds_file().display().to_string()),
    ];
    let secrets = [
        Secret::jwt("the user JWT", user.jwt()),
        Secret::new("the seed", user.seed()),
    ];
    run_payments_example("auth_credentials_file.sql", &subscriber, &envs, &secrets).await;
}

#[tokio::test]
async fn auth_jwt_example_with_the_jwt_in_the_environment_and_the_seed_in_a_file() {
    let (auth, server, subscriber) = operator_server().await;
    let user = auth.user("payments");
    let dir = tempfile::tempdir().unwrap();
    let seed_file = write_temp(&dir, "user.nk", &format!("{}\n", user.seed()));

    let envs = [
        ("NATS_URL", server.url()),
        ("NATS_USER_JWT", user.jwt().to_string()),
        ("NATS_NKEY_SEED_FILE", seed_file),
    ];
    let secrets = [
        Secret::jwt("the user JWT", user.jwt()),
        Secret::new("the seed", user.seed()),
    ];
    run_payments_example("auth_jwt.sql", &subscriber, &envs, &secrets).await;
}

#[tokio::test]
async fn tls_example_verifies_the_server_against_a_private_ca() {
    let pki = nats_testkit::Pki::new();
    let server = NatsServer::builder().jetstream(false).tls(&pki).start();
    let options = nats_testkit::connect_options()
        .add_root_certificates(pki.ca_file())
        .require_tls(true);
    let subscriber = nats_testkit::connect_with(&server.tls_url(), options).await;

    let envs = [
        ("NATS_URL", server.tls_url()),
        ("NATS_CA", pki.ca_file().display().to_string()),
    ];
    run_payments_example("tls.sql", &subscriber, &envs, &[]).await;
}

#[tokio::test]
async fn mutual_tls_example_presents_a_client_certificate() {
    let pki = nats_testkit::Pki::new();
    let server = NatsServer::builder()
        .jetstream(false)
        .tls(&pki)
        .tls_verify_clients(true)
        .start();
    let options = nats_testkit::mutual_tls_options(&pki);
    let subscriber = nats_testkit::connect_with(&server.tls_url(), options).await;

    let envs = [
        ("NATS_URL", server.tls_url()),
        ("NATS_CA", pki.ca_file().display().to_string()),
        (
            "NATS_CLIENT_CERT",
            pki.client_cert_file().display().to_string(),
        ),
        (
            "NATS_CLIENT_KEY",
            pki.client_key_file().display().to_string(),
        ),
    ];
    let secrets = [Secret::pem_key("the client key", &pki.client_key_file())];
    run_payments_example("mutual_tls.sql", &subscriber, &envs, &secrets).await;
}

/// `nats_to_nats.sql` as written: orders in the stream ORDERS are priced into BILLING,
/// the poison order goes to the dead-letter subject, the durable consumer is
/// acknowledged, and a second run finds nothing new.
#[tokio::test]
async fn nats_to_nats_reads_orders_once_into_billing() {
    use async_nats::jetstream;
    use common::js::{create_stream, read_all};

    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "ORDERS", &["orders.>"], |_| {}).await;
    create_stream(&client, "BILLING", &["billing.>"], |_| {}).await;
    let mut dead_letters = Collector::subscribe(&client, "orders_dlq.>").await;
    let js = jetstream::new(client.clone());
    for (subject, payload) in [
        (
            "orders.eu",
            r#"{"order_id": 1, "region": "eu", "amount": 30}"#,
        ),
        (
            "orders.us",
            r#"{"order_id": 2, "region": "us", "amount": 5}"#,
        ),
        ("orders.us", r#"{"order_id": "three"}"#),
        (
            "orders.eu",
            r#"{"order_id": 4, "region": "eu", "amount": 12.5}"#,
        ),
    ] {
        js.publish(subject, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let envs = [("NATS_URL", server.url())];
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let output = run_script(&example("nats_to_nats.sql"), &envs);
    assert!(output.status.success(), "stderr:\n{}", stderr(&output));
    assert_eq!(inserted_rows(&stdout(&output), "billing"), 2);

    let billed: Vec<String> = read_all(&client, "BILLING")
        .await
        .iter()
        .map(|m| format!("{} {}", m.subject, String::from_utf8_lossy(&m.payload)))
        .collect();
    assert_eq!(
        billed,
        [
            r#"billing.eu {"order_id":1,"gross":36.0,"ordered_on":"orders.eu","id":"orders-1"}"#,
            r#"billing.eu {"order_id":4,"gross":15.0,"ordered_on":"orders.eu","id":"orders-4"}"#,
        ]
    );
    let letters = dead_letters.collect(1, Duration::from_secs(5)).await;
    assert_eq!(text(&letters[0]), r#"{"order_id": "three"}"#);

    let info = js
        .get_stream("ORDERS")
        .await
        .unwrap()
        .consumer_info("billing_etl")
        .await
        .unwrap();
    assert_eq!((info.ack_floor.stream_sequence, info.num_pending), (4, 0));
    // Run again: the consumer has nothing new, so nothing is billed twice.
    let output = run_script(&example("nats_to_nats.sql"), &envs);
    assert!(output.status.success(), "stderr:\n{}", stderr(&output));
    assert_eq!(inserted_rows(&stdout(&output), "billing"), 0);
}

/// `headers.sql` as written: each click's trace id and tenant, its map's entries and the
/// static header reach a subscriber as headers; the payload keeps the other columns.
#[tokio::test]
async fn headers_example_sends_column_map_and_static_headers() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    let mut received = Collector::subscribe(&client, "clicks.>").await;

    let output = run_script(&example("headers.sql"), &[("NATS_URL", &server.url())]);
    assert!(output.status.success(), "stderr:\n{}", stderr(&output));
    assert_eq!(inserted_rows(&stdout(&output), "clicks_out"), 3);

    let messages = received.collect(3, Duration::from_secs(5)).await;
    let header = |m: &async_nats::Message, name: &str| {
        m.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.to_string())
    };
    for (message, (trace, tenant, page, campaign)) in messages.iter().zip([
        ("t-101", "acme", "/home", Some("spring")),
        ("t-102", "globex", "/cart", None),
        ("t-103", "acme", "/checkout", Some("spring")),
    ]) {
        assert_eq!(message.subject.as_str(), format!("clicks.{tenant}"));
        assert_eq!(header(message, "trace_id").as_deref(), Some(trace));
        assert_eq!(header(message, "tenant").as_deref(), Some(tenant));
        assert_eq!(header(message, "Page").as_deref(), Some(page));
        assert_eq!(header(message, "Campaign").as_deref(), campaign);
        assert_eq!(header(message, "Source").as_deref(), Some("streamsql"));
    }
    assert_eq!(text(&messages[1]), r#"{"page":"/cart","ms":45}"#);
}

/// `ttl.sql` as written, into a stream that allows per-message TTLs: every session is
/// stored with its `Nats-TTL`, and the guest's (2 s) is gone soon after.
#[tokio::test]
async fn ttl_example_stores_sessions_that_expire() {
    use common::js::{create_stream, read_all, wait_until_stored};

    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "SESSIONS", &["sessions.>"], |c| {
        c.allow_message_ttl = true
    })
    .await;

    let output = run_script(&example("ttl.sql"), &[("NATS_URL", &server.url())]);
    assert!(output.status.success(), "stderr:\n{}", stderr(&output));
    assert_eq!(inserted_rows(&stdout(&output), "sessions"), 3);
    let ttls: Vec<String> = read_all(&client, "SESSIONS")
        .await
        .iter()
        .map(|m| common::js::header(m, "Nats-TTL").unwrap_or_default())
        .collect();
    assert_eq!(ttls, ["3600", "1800", "2"]);

    wait_until_stored(&client, "SESSIONS", 2, Duration::from_secs(15)).await;
    let left: Vec<String> = read_all(&client, "SESSIONS")
        .await
        .iter()
        .map(|m| m.subject.to_string())
        .collect();
    assert_eq!(left, ["sessions.alice", "sessions.bob"]);
}

/// `raw.sql` as written: each message is the column's bytes, unchanged, with its message
/// id and header.
#[tokio::test]
async fn raw_example_sends_the_column_bytes_unchanged() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    let mut received = Collector::subscribe(&client, "exports.>").await;

    let output = run_script(&example("raw.sql"), &[("NATS_URL", &server.url())]);
    assert!(output.status.success(), "stderr:\n{}", stderr(&output));
    assert_eq!(inserted_rows(&stdout(&output), "exports"), 3);

    let messages = received.collect(3, Duration::from_secs(5)).await;
    let got: Vec<(String, Vec<u8>, String, String)> = messages
        .iter()
        .map(|m| {
            let headers = m.headers.as_ref().expect("headers");
            (
                m.subject.to_string(),
                m.payload.to_vec(),
                headers.get("Nats-Msg-Id").unwrap().to_string(),
                headers.get("content_kind").unwrap().to_string(),
            )
        })
        .collect();
    let row = |s: &str, p: &[u8], id: &str, kind: &str| {
        (s.to_string(), p.to_vec(), id.to_string(), kind.to_string())
    };
    assert_eq!(
        got,
        [
            row("exports.csv", b"1,alice,30.50", "export-1", "csv"),
            row("exports.bin", &[0x00, 0xff, 0x10], "export-2", "bin"),
            row("exports.csv", b"3,carol,7.25", "export-3", "csv"),
        ]
    );
}

/// `kv.sql` as written: the changelog leaves `user.1` at its last value, `user.2`
/// deleted and `user.3` purged (its history gone but for the purge).
#[tokio::test]
async fn kv_example_turns_a_changelog_into_bucket_state() {
    use async_nats::jetstream::{self, kv::Operation};
    use futures::StreamExt;

    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    let kv = jetstream::new(client)
        .create_key_value(jetstream::kv::Config {
            bucket: "profiles".into(),
            history: 5,
            ..Default::default()
        })
        .await
        .unwrap();

    let output = run_script(&example("kv.sql"), &[("NATS_URL", &server.url())]);
    assert!(output.status.success(), "stderr:\n{}", stderr(&output));
    assert_eq!(inserted_rows(&stdout(&output), "profiles"), 6);

    let value = kv.get("user.1").await.unwrap().expect("user.1 is set");
    assert_eq!(&value[..], br#"{"name":"alice","plan":"pro"}"#);
    let deleted = kv.entry("user.2").await.unwrap().unwrap();
    assert_eq!(deleted.operation, Operation::Delete);
    let purged = kv.entry("user.3").await.unwrap().unwrap();
    assert_eq!(purged.operation, Operation::Purge);
    let history: Vec<_> = kv.history("user.3").await.unwrap().collect().await;
    assert_eq!(history.len(), 1);
    let keys: Vec<String> = kv.keys().await.unwrap().map(|k| k.unwrap()).collect().await;
    assert_eq!(keys, ["user.1"]);
}
