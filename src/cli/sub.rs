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
use crate::registry::redact;

const FORMAT_HELP: &str = "\
Output: one line per message on stdout, flushed per message:
  <subject>[ reply=<reply>][ hdr <name>=<value>]... <payload>
Headers are sorted by name, one 'hdr' per value. The payload is printed as UTF-8
(invalid bytes as U+FFFD) with raw line breaks written as \\n and \\r; nothing else
is escaped. 'listening on <SUBJECT>' goes to stderr once the subscription is active.

Exit: 0 after --count messages, or after --timeout idle seconds if any message came;
1 if none came within --timeout, or on a connection error.";

/// Arguments of `streamsql sub`. `Debug` hides the password, the token and any
/// `user:pass@` in the server URL.
#[derive(Args)]
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

impl std::fmt::Debug for SubArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secrets = [("password", &self.password), ("token", &self.token)];
        let secrets = redact(
            secrets
                .iter()
                .filter_map(|(k, v)| v.as_deref().map(|v| (*k, v))),
            |_| true,
        );
        f.debug_struct("SubArgs")
            .field("subject", &self.subject)
            .field("server", &masked_url(&self.server))
            .field("user", &self.user)
            .field("secrets", &secrets)
            .field("count", &self.count)
            .field("timeout", &self.timeout)
            .finish()
    }
}

pub(super) fn run(args: SubArgs) -> Result<ExitCode, String> {
    let idle = args.timeout.map(idle_timeout).transpose()?;
    if args.count == Some(0) {
        return Err("--count must be at least 1".to_string());
    }
    runtime(1)?.block_on(subscribe(args, idle))
}

/// `--timeout` as a duration: positive, finite and representable.
fn idle_timeout(secs: f64) -> Result<Duration, String> {
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!(
            "--timeout must be a positive number of seconds, got {secs}"
        ));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| {
        format!(
            "--timeout {secs} is too large; give at most {} seconds, or leave it out to wait \
             without limit",
            u64::MAX
        )
    })
}

/// `url` (or a comma-separated list of URLs) with any `user:pass@` or `token@` shown
/// as `***@`, for messages.
fn masked_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let (scheme, rest) = match one.find("://") {
                Some(i) => one.split_at(i + 3),
                None => ("", one),
            };
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest.get(..authority_end).and_then(|a| a.rfind('@')) {
                Some(at) => format!("{scheme}***{}", rest.get(at..).unwrap_or_default()),
                None => one.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

async fn subscribe(args: SubArgs, idle: Option<Duration>) -> Result<ExitCode, String> {
    let server = masked_url(&args.server);
    let mut options = ConnectOptions::new()
        .subscription_capacity(1 << 16)
        .event_callback(|event| async move {
            match event {
                // The client drops messages when our buffer is full; say so loudly.
                Event::SlowConsumer(_) => {
                    say!("warning: slow consumer: the client dropped messages");
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
        .map_err(|e| format!("cannot connect to {server}: {e}"))?;
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
        .map_err(|_| format!("{server} did not answer within 10s"))?;
    drop(echo);
    say!("listening on {}", args.subject);

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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn urls_are_shown_without_credentials() {
        assert_eq!(
            masked_url("nats://me:hunter2@127.0.0.1:4222"),
            "nats://***@127.0.0.1:4222"
        );
        assert_eq!(
            masked_url("tls://s3cr3t@a:4222,nats://b:4222,u:p@c"),
            "tls://***@a:4222,nats://b:4222,***@c"
        );
        assert_eq!(masked_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        // An '@' past the authority is not userinfo.
        assert_eq!(masked_url("ws://h:80/p@q"), "ws://h:80/p@q");
    }

    #[test]
    fn huge_or_bad_timeouts_are_errors_not_panics() {
        assert_eq!(idle_timeout(1.5), Ok(Duration::from_millis(1500)));
        for secs in [1e300, f64::MAX, 2e19] {
            let err = idle_timeout(secs).unwrap_err();
            assert!(err.contains("too large"), "{err}");
        }
        for secs in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(idle_timeout(secs).unwrap_err().contains("positive"));
        }
    }

    #[test]
    fn debug_hides_secrets() {
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            args: SubArgs,
        }
        let wrap = Wrap::parse_from([
            "x",
            "s",
            "--server",
            "nats://me:hunter2@h:4222",
            "--user",
            "me",
            "--password",
            "hunter2",
        ]);
        let debug = format!("{:?}", wrap.args);
        assert!(!debug.contains("hunter2"), "{debug}");
        let wrap = Wrap::parse_from(["x", "s", "--token", "hunter2"]);
        let debug = format!("{:?}", wrap.args);
        assert!(
            !debug.contains("hunter2") && debug.contains("***"),
            "{debug}"
        );
    }
}
