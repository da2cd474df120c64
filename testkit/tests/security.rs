//! Every security mode against real nats-server processes and plain async-nats
//! clients: TLS, mutual TLS, TLS-first, nkey users and operator-mode JWTs. Each mode
//! admits the client it should, and refuses the wrong one with the error async-nats
//! 0.51 reports for it (the connector's error messages build on these).

use std::error::Error as _;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::rustls::{self, AlertDescription, CertificateError};
use async_nats::{ConnectError, ConnectErrorKind, ConnectOptions, ServerError};
use nats_testkit::{JwtAuth, NatsServer, Pki};

/// The rustls error somewhere in `err`'s source chain. async-nats wraps it in an
/// `io::Error` (kind `InvalidData`), so it sits inside that error, not in the chain.
fn rustls_error(err: &ConnectError) -> Option<rustls::Error> {
    let mut source = err.source();
    while let Some(error) = source {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls.clone());
        }
        let inner = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref());
        if let Some(tls) = inner.and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            return Some(tls.clone());
        }
        source = error.source();
    }
    None
}

async fn refused(url: String, options: ConnectOptions) -> ConnectError {
    match options.connect(url).await {
        Ok(client) => panic!(
            "connected although it should not: {:?}",
            client.server_info()
        ),
        Err(err) => err,
    }
}

fn assert_authorization_violation(err: &ConnectError) {
    assert_eq!(
        err.kind(),
        ConnectErrorKind::AuthorizationViolation,
        "{err}"
    );
    let server = err.source().and_then(|s| s.downcast_ref::<ServerError>());
    assert_eq!(server, Some(&ServerError::AuthorizationViolation), "{err}");
}

fn trusting(ca: std::path::PathBuf) -> ConnectOptions {
    nats_testkit::connect_options().add_root_certificates(ca)
}

#[tokio::test]
async fn tls_clients_trusting_the_ca_connect_by_ip_and_by_name() {
    let pki = Pki::new();
    let server = NatsServer::builder().tls(&pki).monitor(true).start();
    let localhost = format!("nats://localhost:{}", server.port());

    let mut clients = Vec::new();
    for url in [server.url(), server.tls_url(), localhost] {
        let options = trusting(pki.ca_file()).require_tls(true);
        let client = nats_testkit::connect_with(&url, options).await;
        assert!(client.server_info().tls_required, "{url}");
        nats_testkit::round_trip(&client).await;
        clients.push(client);
    }
    let connz = server.monitor_json("/connz");
    let versions: Vec<&str> = connz["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["tls_version"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(versions.len(), 3, "{connz}");
    assert!(versions.iter().all(|v| v.starts_with("1.")), "{versions:?}");
    // The readiness check completes its handshake: no error in the log to mislead.
    assert!(!server.log().contains("[ERR]"), "{}", server.log());
}

#[tokio::test]
async fn a_tls_server_is_refused_by_clients_trusting_another_ca() {
    let pki = Pki::new();
    let server = NatsServer::builder().tls(&pki).start();

    let err = refused(server.url(), trusting(pki.other_ca_file())).await;

    assert_eq!(err.kind(), ConnectErrorKind::Io, "{err}");
    assert_eq!(
        rustls_error(&err),
        Some(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer
        )),
        "{err}"
    );
}

#[tokio::test]
async fn a_misnamed_certificate_from_the_trusted_ca_is_refused_by_name() {
    let pki = Pki::new();
    let server = NatsServer::builder().tls(&pki).tls_misnamed(true).start();

    for url in [
        server.tls_url(),
        format!("tls://localhost:{}", server.port()),
    ] {
        let err = refused(url.clone(), trusting(pki.ca_file())).await;
        let refused_by_name = matches!(
            rustls_error(&err),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            ))
        );
        assert!(refused_by_name, "{url}: {err}");
    }
}

/// Client TLS is configured per server, routes apart: a TLS node and a plaintext one
/// form one cluster, and the TLS node announces the plaintext one's client URL (INFO
/// `connect_urls` carry no scheme) to its TLS clients.
#[tokio::test]
async fn a_mixed_cluster_announces_its_plaintext_member_to_tls_clients() {
    let pki = Pki::new();
    let cluster =
        nats_testkit::NatsCluster::start_with(
            2,
            |i, node| {
                if i == 0 { node.tls(&pki) } else { node }
            },
        );
    let options = trusting(pki.ca_file()).require_tls(true);
    let tls_client = nats_testkit::connect_with(&cluster.node(0).tls_url(), options).await;
    let info = tls_client.server_info();
    assert!(info.tls_required, "{info:?}");
    let plaintext = format!("127.0.0.1:{}", cluster.node(1).port());
    assert!(info.connect_urls.contains(&plaintext), "{info:?}");

    let plain_client = nats_testkit::connect(&cluster.node(1).url()).await;
    assert!(!plain_client.server_info().tls_required);
}

#[tokio::test]
async fn a_client_without_tls_options_still_upgrades_and_checks_the_system_roots() {
    let pki = Pki::new();
    let server = NatsServer::builder().tls(&pki).start();

    // async-nats follows the server's `tls_required`: there is no plaintext attempt,
    // the test CA is just not among the platform's roots.
    let err = refused(server.url(), ConnectOptions::new()).await;

    match err.kind() {
        ConnectErrorKind::Io => assert_eq!(
            rustls_error(&err),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            )),
            "{err}"
        ),
        // A machine whose platform certificate store cannot be read fails earlier.
        ConnectErrorKind::Tls => assert!(err.to_string().contains("platform certs"), "{err}"),
        _ => panic!("{err}"),
    }
}

#[tokio::test]
async fn mutual_tls_admits_only_a_client_certificate_from_the_ca() {
    let pki = Pki::new();
    let server = NatsServer::builder()
        .tls(&pki)
        .tls_verify_clients(true)
        .start();

    let with_cert = trusting(pki.ca_file())
        .add_client_certificate(pki.client_cert_file(), pki.client_key_file());
    let client = nats_testkit::connect_with(&server.url(), with_cert).await;
    nats_testkit::round_trip(&client).await;
    assert!(!server.log().contains("[ERR]"), "{}", server.log());

    let err = refused(server.url(), trusting(pki.ca_file())).await;
    assert_eq!(err.kind(), ConnectErrorKind::Io, "{err}");
    let alert = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
    assert_eq!(rustls_error(&err), Some(alert), "{err}");

    let untrusted = trusting(pki.ca_file()).add_client_certificate(
        pki.untrusted_client_cert_file(),
        pki.untrusted_client_key_file(),
    );
    let err = refused(server.url(), untrusted).await;
    assert_eq!(err.kind(), ConnectErrorKind::Io, "{err}");
    let alert = rustls::Error::AlertReceived(AlertDescription::UnknownCA);
    assert_eq!(rustls_error(&err), Some(alert), "{err}");
}

#[tokio::test]
async fn a_tls_first_server_is_ready_after_starts_and_restarts_and_speaks_tls_first_only() {
    let pki = Pki::new();
    // With client verification too: the readiness check must present a certificate.
    let mut server = NatsServer::builder()
        .tls(&pki)
        .tls_verify_clients(true)
        .tls_handshake_first(true)
        .start();
    server.restart();
    let log = server.log();
    assert!(
        log.contains("TLS Handshake First") && !log.contains("[ERR]"),
        "{log}"
    );

    let first = trusting(pki.ca_file())
        .add_client_certificate(pki.client_cert_file(), pki.client_key_file())
        .tls_first();
    let client = nats_testkit::connect_with(&server.url(), first).await;
    nats_testkit::round_trip(&client).await;

    // A client waiting for INFO gets none; the server drops it after its TLS
    // handshake timeout, well before the client's own 5 s connection timeout.
    let started = std::time::Instant::now();
    let err = refused(server.url(), trusting(pki.ca_file())).await;
    assert_eq!(err.kind(), ConnectErrorKind::Io, "{err}");
    assert_eq!(err.to_string(), "IO error: expected INFO, got nothing");
    let handshake_timeout = Duration::from_secs(nats_testkit::TLS_HANDSHAKE_TIMEOUT_SECS.into());
    assert!(
        started.elapsed() >= handshake_timeout,
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_tls_first_client_fails_at_once_on_a_server_that_sends_info_first() {
    let pki = Pki::new();
    let server = NatsServer::builder().tls(&pki).start();

    let err = refused(server.url(), trusting(pki.ca_file()).tls_first()).await;

    assert_eq!(err.kind(), ConnectErrorKind::Io, "{err}");
    let corrupt = rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
    assert_eq!(rustls_error(&err), Some(corrupt), "{err}");
}

#[tokio::test]
async fn an_nkey_user_signs_in_with_its_seed_and_an_unknown_key_is_refused() {
    let (alice, stranger) = (nats_testkit::new_user_nkey(), nats_testkit::new_user_nkey());
    let server = NatsServer::builder().nkey_user(alice.public_key()).start();

    let options = nats_testkit::connect_options().nkey(alice.seed().into());
    let client = nats_testkit::connect_with(&server.url(), options).await;
    nats_testkit::round_trip(&client).await;

    let err = refused(
        server.url(),
        ConnectOptions::with_nkey(stranger.seed().into()),
    )
    .await;
    assert_authorization_violation(&err);
}

#[tokio::test]
async fn a_jwt_user_gets_jetstream_in_its_account() {
    let auth = JwtAuth::new();
    let server = NatsServer::builder().operator(&auth).start();

    let options = nats_testkit::connect_options()
        .credentials_file(auth.user_creds("alice"))
        .await
        .unwrap();
    let client = nats_testkit::connect_with(&server.url(), options).await;
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: "ORDERS".into(),
        subjects: vec!["orders.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let ack = js.publish("orders.1", "{}".into()).await.unwrap();
    assert_eq!(ack.await.unwrap().sequence, 1);
    let log = server.log();
    assert!(!log.contains("[ERR]"), "{log}");
}

#[tokio::test]
async fn a_jwt_and_seed_given_separately_sign_in_like_a_creds_file() {
    let auth = JwtAuth::new();
    let server = NatsServer::builder().operator(&auth).start();
    let user = auth.user("bob");

    let key = std::sync::Arc::new(nkeys::KeyPair::from_seed(user.seed()).unwrap());
    let options = nats_testkit::connect_options().jwt(user.jwt().into(), move |nonce| {
        let key = std::sync::Arc::clone(&key);
        async move { key.sign(&nonce).map_err(async_nats::AuthError::new) }
    });
    let client = nats_testkit::connect_with(&server.url(), options).await;
    nats_testkit::round_trip(&client).await;

    let creds = ConnectOptions::with_credentials(&user.creds()).unwrap();
    let client = nats_testkit::connect_with(&server.url(), creds).await;
    nats_testkit::round_trip(&client).await;
}

#[tokio::test]
async fn expired_revoked_and_foreign_jwt_users_are_refused() {
    let mut auth = JwtAuth::new();
    let revoked = auth.revoked_user_creds("mallory");
    let server = NatsServer::builder().operator(&auth).start();
    let stranger = JwtAuth::new(); // another operator, unknown to the server
    let foreign = stranger.user_creds("eve");

    for creds in [auth.expired_user_creds("old"), revoked, foreign] {
        let options = ConnectOptions::with_credentials_file(&creds).await.unwrap();
        let err = refused(server.url(), options).await;
        assert_authorization_violation(&err);
    }
}
