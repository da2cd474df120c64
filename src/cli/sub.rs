//! `streamsql sub SUBJECT`: a small NATS subscriber for scripts and tests.
//!
//! It prints `listening on SUBJECT` to stderr only once the server has provably
//! registered the subscription (an echo through the client's own inbox, sent after
//! the subscribe, has come back), so a script that waits for that line cannot lose
//! the first messages. Each message is one stdout line, flushed at once.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use async_nats::{ConnectOptions, Event};
use clap::Args;
use futures::StreamExt;

use super::print::format_message;
use super::runtime;

const FORMAT_HELP: &str = "\
Output: one line per message on stdout, flushed per message:
  <subject>[ reply=<reply>][ hdr <name>=<value>]... <payload>
Headers are sorted by name, one 'hdr' per value. The payload is printed as UTF-8
(invalid bytes as U+FFFD) with raw line breaks written as \\n and \\r; nothing else
is escaped. 'listening on <SUBJECT>' goes to stderr once the subscription is active.

Exit: 0 after --count messages, or after --timeout idle seconds if any message came;
1 if none came within --timeout, or on a connection error.";

/// Arguments of `streamsql sub`.
#[derive(Debug, Args)]
#[command(after_help = FORMAT_HELP)]
pub struct SubArgs {
    /// Subject to subscribe to; may contain the wildcards `*` and `>`.
    pub subject: String,

    /// Server URL.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub server: String,

    /// User name (with --password).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// Password for --user (ignored without --user).
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,

    /// Token authentication.
    #[arg(long, conflicts_with = "user")]
    pub token: Option<String>,

    /// Exit after this many messages.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,

    /// Exit after this many seconds without a message (fractions allowed).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
}

pub(super) fn run(args: SubArgs) -> Result<ExitCode, String> {
    if let Some(t) = args.timeout
        && !(t.is_finite() && t > 0.0)
    {
        return Err(format!(
            "--timeout must be a positive number of seconds, got {t}"
        ));
    }
    if args.count == Some(0) {
        return Err("--count must be at least 1".to_string());
    }
    runtime(1)?.block_on(subscribe(args))
}

async fn subscribe(args: SubArgs) -> Result<ExitCode, String> {
    let mut options = ConnectOptions::new()
        .subscription_capacity(1 << 16)
        .event_callback(|event| async move {
            match event {
                // The client drops messages when our buffer is full; say so loudly.
                Event::SlowConsumer(_) => {
                    eprintln!("warning: slow consumer: the client dropped messages");
                }
                other => tracing::debug!(event = %other, "nats event"),
            }
        });
    if let Some(user) = &args.user {
        let password = args.password.clone().ok_or_else(|| {
            format!("--user {user} needs --password (or NATS_PASSWORD in the environment)")
        })?;
        options = options.user_and_password(user.clone(), password);
    }
    if let Some(token) = &args.token {
        options = options.token(token.clone());
    }
    let client = options
        .connect(args.server.as_str())
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", args.server))?;
    let mut subscriber = client
        .subscribe(args.subject.clone())
        .await
        .map_err(|e| format!("cannot subscribe to '{}': {e}", args.subject))?;

    // Barrier: the server handles a connection's commands in order, so once our echo
    // comes back the SUB before it is active.
    let probe = client.new_inbox();
    let mut echo = client
        .subscribe(probe.clone())
        .await
        .map_err(|e| format!("cannot subscribe to the inbox: {e}"))?;
    client
        .publish(probe.clone(), bytes::Bytes::new())
        .await
        .map_err(|e| format!("cannot publish to the inbox: {e}"))?;
    tokio::time::timeout(Duration::from_secs(10), echo.next())
        .await
        .map_err(|_| format!("{} did not answer within 10s", args.server))?;
    drop(echo);
    eprintln!("listening on {}", args.subject);

    let idle = args.timeout.map(Duration::from_secs_f64);
    let mut received = 0u64;
    let mut stdout = std::io::stdout().lock();
    loop {
        let next = match idle {
            Some(idle) => match tokio::time::timeout(idle, subscriber.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => subscriber.next().await,
        };
        let Some(message) = next else {
            return Err(format!("the subscription to '{}' was closed", args.subject));
        };
        // A wildcard like '>' also matches our own echo.
        if message.subject.as_str() == probe.as_str() {
            continue;
        }
        let headers = message
            .headers
            .iter()
            .flat_map(|h| h.iter())
            .flat_map(|(name, values)| values.iter().map(move |v| (name.as_ref(), v.as_str())));
        let line = format_message(
            message.subject.as_str(),
            message.reply.as_ref().map(|r| r.as_str()),
            headers,
            &message.payload,
        );
        writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .map_err(|e| format!("cannot write to stdout: {e}"))?;
        received += 1;
        if args.count == Some(received) {
            return Ok(ExitCode::SUCCESS);
        }
    }
    if received == 0 {
        return Err(format!(
            "no message on '{}' within {}s",
            args.subject,
            args.timeout.unwrap_or_default()
        ));
    }
    Ok(ExitCode::SUCCESS)
}
