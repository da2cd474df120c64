//! The server lifecycle against real nats-server processes: start, configuration,
//! kill, stop, restart with JetStream data surviving, parallel servers.

use std::time::Duration;

use async_nats::ConnectErrorKind;
use async_nats::jetstream::{self, stream};
use nats_testkit::{Collector, NatsServer};

#[tokio::test]
async fn a_plain_server_is_ready_on_a_free_loopback_port_with_jetstream() {
    let mut server = NatsServer::start();

    assert_ne!(server.port(), 4222);
    assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
    assert!(server.is_running());
    assert!(!server.version().is_empty());
    let client = nats_testkit::connect(&server.url()).await;
    assert!(client.server_info().jetstream);
    assert!(server.log().contains("Server is ready"), "{}", server.log());
    assert!(server.store_dir().join("jetstream").is_dir());
}

#[tokio::test]
async fn two_servers_run_side_by_side_without_sharing_messages() {
    let (first, second) = (NatsServer::start(), NatsServer::start());
    assert_ne!(first.port(), second.port());
    assert_ne!(first.store_dir(), second.store_dir());

    let (a, b) = (
        nats_testkit::connect(&first.url()).await,
        nats_testkit::connect(&second.url()).await,
    );
    let mut on_first = Collector::subscribe(&a, "x").await;
    let mut on_second = Collector::subscribe(&b, "x").await;
    a.publish("x", "only on the first".into()).await.unwrap();

    assert_eq!(on_first.collect(1, Duration::from_secs(5)).await.len(), 1);
    let leaked = on_second
        .collect_until_idle(Duration::from_millis(200))
        .await;
    assert!(leaked.is_empty(), "{leaked:?}");
}

#[tokio::test]
async fn kill_and_restart_keep_the_port_and_the_jetstream_data() {
    let mut server = NatsServer::start();
    let port = server.port();
    let client = nats_testkit::connect(&server.url()).await;
    let js = jetstream::new(client.clone());
    js.create_stream(stream::Config {
        name: "ORDERS".into(),
        subjects: vec!["orders.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap();
    js.publish("orders.1", "kept".into())
        .await
        .unwrap()
        .await
        .unwrap();

    server.kill();
    assert!(!server.is_running());
    assert!(
        !server.log().contains("Trapped"),
        "kill must not be graceful"
    );
    server.restart();

    assert!(server.is_running());
    assert_eq!(server.port(), port);
    let js = jetstream::new(nats_testkit::connect(&server.url()).await);
    let mut orders = js.get_stream("ORDERS").await.unwrap();
    assert_eq!(orders.info().await.unwrap().state.messages, 1);
    let kept = orders.get_raw_message(1).await.unwrap();
    assert_eq!(kept.payload, "kept");

    // A client connected before the crash finds the server again by itself.
    tokio::time::timeout(Duration::from_secs(10), nats_testkit::round_trip(&client))
        .await
        .expect("the old client did not reconnect");
}

#[test]
fn restart_waits_for_its_port_to_be_free_again() {
    let mut server = NatsServer::start();
    server.kill();
    let squatter = std::net::TcpListener::bind(("127.0.0.1", server.port())).unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(squatter);
    });

    server.restart();

    assert!(server.is_running());
    assert!(server.log().contains("address already in use"));
    release.join().unwrap();
}

#[tokio::test]
async fn stop_is_graceful_and_restart_of_a_running_server_works() {
    let mut server = NatsServer::start();
    server.stop();
    assert!(!server.is_running());
    assert!(
        server.log().contains("Trapped \"terminated\" signal"),
        "{}",
        server.log()
    );

    server.restart();
    server.restart(); // running: stops, then starts again
    assert!(server.is_running());
    nats_testkit::connect(&server.url()).await;
}

#[tokio::test]
async fn user_and_password_are_required_and_checked() {
    // Quotes, backslashes and `$` would break or change an unquoted config value.
    let password = r#"p"a\s$word"#;
    let server = NatsServer::builder().user("alice", password).start();

    let wrong = async_nats::ConnectOptions::with_user_and_password("alice".into(), "nope".into())
        .connect(server.url())
        .await
        .expect_err("a wrong password must be rejected");
    assert_eq!(wrong.kind(), ConnectErrorKind::AuthorizationViolation);
    let anonymous = async_nats::connect(server.url()).await;
    assert!(anonymous.is_err(), "a client without credentials got in");

    nats_testkit::connect_with_user(&server.url(), "alice", password).await;
}

#[tokio::test]
async fn a_token_is_required_and_checked() {
    let server = NatsServer::builder().token("t0ken").start();

    let wrong = async_nats::ConnectOptions::with_token("other".into())
        .connect(server.url())
        .await
        .expect_err("a wrong token must be rejected");
    assert_eq!(wrong.kind(), ConnectErrorKind::AuthorizationViolation);
    let options = nats_testkit::connect_options().token("t0ken".into());
    nats_testkit::connect_with(&server.url(), options).await;
}

#[tokio::test]
async fn limits_monitoring_and_raw_config_reach_the_server() {
    let server = NatsServer::builder()
        .max_payload(1024)
        .monitor(true)
        .config("max_connections: 7")
        .start();

    let client = nats_testkit::connect(&server.url()).await;
    assert_eq!(client.server_info().max_payload, 1024);
    let varz = server.monitor_json("/varz");
    assert_eq!(varz["port"], server.port());
    assert_eq!(varz["max_connections"], 7);
    assert!(server.monitor_url().starts_with("http://127.0.0.1:"));
    let connz = server.monitor_json("/connz");
    let names: Vec<&str> = connz["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|connection| connection["name"].as_str())
        .collect();
    assert!(names.contains(&"nats-testkit"), "{connz}");
}

#[tokio::test]
async fn jetstream_can_be_turned_off() {
    let server = NatsServer::builder().jetstream(false).start();

    let client = nats_testkit::connect(&server.url()).await;
    assert!(!client.server_info().jetstream);
    assert!(jetstream::new(client).query_account().await.is_err());
}

#[test]
fn a_chosen_port_is_used() {
    let port = nats_testkit::free_port();
    let server = NatsServer::builder().port(port).start();
    assert_eq!(server.port(), port);
    assert_eq!(server.url(), format!("nats://127.0.0.1:{port}"));
}

#[test]
fn a_broken_config_fails_fast_with_the_server_log() {
    let started = std::time::Instant::now();
    let panic = std::panic::catch_unwind(|| {
        NatsServer::builder().config("no_such_option: 1").start();
    })
    .expect_err("a server with a broken config must not start");
    let message = panic
        .downcast_ref::<String>()
        .expect("a formatted panic message");
    assert!(message.contains("exited during startup"), "{message}");
    assert!(
        message.contains("unknown field \"no_such_option\""),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it waited for the timeout"
    );
}

#[test]
#[should_panic(expected = "must not use port 4222")]
fn port_4222_is_refused() {
    let _ = NatsServer::builder().port(4222);
}

#[test]
fn dropping_a_server_kills_it() {
    let server = NatsServer::start();
    let port = server.port();
    drop(server);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

/// Set for a child run of this test binary that should leave a server behind.
const LEAK_ENV: &str = "NATS_TESTKIT_LEAK_A_SERVER";

#[test]
fn a_server_never_outlives_its_test_process() {
    // A child run of this very binary starts a server on a thread that exits, forgets
    // it (as a `static` would), checks it still runs, prints its port and exits.
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "leak_a_server_if_asked", "--nocapture"])
        .env(LEAK_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(child.status.success(), "{stdout}");
    let port: u16 = stdout
        .lines()
        .find_map(|line| line.strip_prefix("leaked port "))
        .unwrap_or_else(|| panic!("no port in the child's output: {stdout}"))
        .parse()
        .unwrap();

    // The kernel kills it when the child process exits; give that a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server on {port} outlived its process"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Forgetting the server also forgot its temporary directory.
    let dir = stdout
        .lines()
        .find_map(|line| line.strip_prefix("leaked dir "));
    std::fs::remove_dir_all(dir.expect("no directory in the child's output")).unwrap();
}

/// The child half of `a_server_never_outlives_its_test_process`; does nothing in a
/// normal run.
#[test]
fn leak_a_server_if_asked() {
    if std::env::var_os(LEAK_ENV).is_none() {
        return;
    }
    let (port, dir) = std::thread::spawn(|| {
        let server = NatsServer::start();
        let leaked = (
            server.port(),
            server.store_dir().parent().unwrap().to_owned(),
        );
        std::mem::forget(server);
        leaked
    })
    .join()
    .unwrap();
    // Outliving the thread that started it is required (servers in statics).
    std::thread::sleep(Duration::from_millis(100));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    println!("leaked port {port}");
    println!("leaked dir {}", dir.display());
}
