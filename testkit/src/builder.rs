//! `ServerBuilder`: what a test server should look like, and the config file that says so.
//!
//! Every setting goes into one nats-server config file rather than onto the command
//! line, for two reasons: `restart()` then starts exactly the same server by reusing
//! the file, and raw text from `.config()` can extend or override any of it (in
//! nats-server config a later key wins over an earlier one).

use std::fmt;
use std::path::Path;

use crate::operator::OperatorConfig;
use crate::ports::{self, DEFAULT_NATS_PORT};
use crate::tls::TlsSettings;
use crate::{JwtAuth, NatsServer, Pki};

/// How clients must authenticate. One enum rather than optional fields, because
/// nats-server accepts only one of these per `authorization` block, and operator mode
/// replaces that block altogether.
#[derive(Clone, Default)]
pub(crate) enum Auth {
    #[default]
    None,
    UserPassword {
        user: String,
        password: String,
    },
    Token(String),
    /// Public keys only; the seeds stay with the clients.
    Nkeys(Vec<String>),
    Operator(OperatorConfig),
}

// Secrets stay out of test output, the same rule the connector follows.
impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::UserPassword { user, .. } => write!(f, "UserPassword {{ user: {user:?} }}"),
            Auth::Token(_) => f.write_str("Token(<redacted>)"),
            Auth::Nkeys(keys) => write!(f, "Nkeys({keys:?})"),
            Auth::Operator(config) => write!(f, "Operator({config:?})"),
        }
    }
}

/// Settings for a test server; create with [`NatsServer::builder`], finish with
/// [`start`](ServerBuilder::start).
///
/// ```no_run
/// let server = nats_testkit::NatsServer::builder()
///     .user("publisher", "s3cret")
///     .max_payload(1024)
///     .monitor(true)
///     .start();
/// ```
#[derive(Debug, Clone)]
#[must_use = "a ServerBuilder does nothing until .start() is called"]
pub struct ServerBuilder {
    pub(crate) auth: Auth,
    pub(crate) tls: TlsSettings,
    pub(crate) jetstream: bool,
    pub(crate) max_payload: Option<u32>,
    pub(crate) monitor: bool,
    pub(crate) port: Option<u16>,
    pub(crate) extra_config: String,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder {
            auth: Auth::None,
            tls: TlsSettings::default(),
            jetstream: true,
            max_payload: None,
            monitor: false,
            port: None,
            extra_config: String::new(),
        }
    }
}

impl ServerBuilder {
    /// Requires every client to log in with this user and password. Replaces any
    /// other authentication set earlier (the same holds for every auth method).
    pub fn user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth = Auth::UserPassword {
            user: user.into(),
            password: password.into(),
        };
        self
    }

    /// Requires every client to present this token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.auth = Auth::Token(token.into());
        self
    }

    /// Lets in a client that signs the server's nonce with the seed of this user public
    /// key (`U...`, see [`new_user_nkey`](crate::new_user_nkey)); clients connect with
    /// `ConnectOptions::with_nkey(seed)`. Call it again to admit more users.
    pub fn nkey_user(mut self, public_key: impl Into<String>) -> Self {
        let mut keys = match self.auth {
            Auth::Nkeys(keys) => keys,
            _ => Vec::new(),
        };
        keys.push(public_key.into());
        self.auth = Auth::Nkeys(keys);
        self
    }

    /// Runs the server in operator mode with `auth`'s operator and accounts, so that
    /// clients log in with user JWTs (`.creds` files) that `auth` issues. Users to be
    /// revoked must be issued before this call (see [`JwtAuth`]); other users may be
    /// issued at any time, also while the server runs.
    pub fn operator(mut self, auth: &JwtAuth) -> Self {
        self.auth = Auth::Operator(auth.server_config());
        self
    }

    /// Serves TLS with `pki`'s server certificate (valid for `127.0.0.1` and
    /// `localhost`) and refuses plaintext clients. Clients trust it with
    /// `ConnectOptions::add_root_certificates(pki.ca_file())`; [`NatsServer::url`]
    /// works (async-nats upgrades when the server asks for TLS), and
    /// [`NatsServer::tls_url`] makes the client insist on TLS as well. The builder keeps
    /// `pki`'s files alive as long as the server.
    pub fn tls(mut self, pki: &Pki) -> Self {
        self.tls.pki = Some(pki.clone());
        self
    }

    /// Mutual TLS: clients must present a certificate signed by the [`tls`](Self::tls)
    /// CA (`ConnectOptions::add_client_certificate`), or the handshake fails.
    pub fn tls_verify_clients(mut self, verify: bool) -> Self {
        self.tls.verify_clients = verify;
        self
    }

    /// TLS before anything else: the server sends its `INFO` only after a TLS
    /// handshake, so only clients with `ConnectOptions::tls_first()` can talk to it.
    pub fn tls_handshake_first(mut self, first: bool) -> Self {
        self.tls.handshake_first = first;
        self
    }

    /// Serves [`Pki::misnamed_server_cert_file`]: signed by the [`tls`](Self::tls) CA
    /// but valid for no name the server is reached by, so a client trusting the CA
    /// still rejects it by name (a cluster member announced under an address its
    /// certificate does not list).
    pub fn tls_misnamed(mut self, misnamed: bool) -> Self {
        self.tls.misnamed = misnamed;
        self
    }

    /// Enables JetStream (the default) or leaves it off, for testing how a client
    /// copes with a server without it.
    pub fn jetstream(mut self, enabled: bool) -> Self {
        self.jetstream = enabled;
        self
    }

    /// Sets the largest message payload the server accepts (its default is 1 MiB).
    /// Clients learn it when they connect and refuse larger publishes themselves.
    pub fn max_payload(mut self, bytes: u32) -> Self {
        self.max_payload = Some(bytes);
        self
    }

    /// Turns on the HTTP monitoring endpoint (`/varz`, `/connz`, `/jsz`, ...) on a
    /// free port of its own; see [`NatsServer::monitor_url`] and
    /// [`NatsServer::monitor_json`].
    pub fn monitor(mut self, enabled: bool) -> Self {
        self.monitor = enabled;
        self
    }

    /// Appends raw nats-server config text after the settings this builder writes.
    /// A key given here overrides the same key written by the builder. May be called
    /// several times; the pieces are appended in order.
    pub fn config(mut self, text: impl AsRef<str>) -> Self {
        self.extra_config.push_str(text.as_ref());
        self.extra_config.push('\n');
        self
    }

    /// Listens on this client port instead of a free one. Without it the server gets
    /// a free port and, should another process take that port first, another one.
    ///
    /// # Panics
    /// On 4222, the port of a developer's real nats-server.
    pub fn port(mut self, port: u16) -> Self {
        assert_ne!(
            port, DEFAULT_NATS_PORT,
            "tests must not use port 4222: a real nats-server may listen there"
        );
        ports::reserve(port);
        self.port = Some(port);
        self
    }

    /// Starts the server and waits until it accepts clients.
    ///
    /// # Panics
    /// If nats-server is not installed, or does not become ready within 10 s (the
    /// message then ends with the tail of the server's log), or a TLS option is set
    /// without [`tls`](Self::tls).
    pub fn start(self) -> NatsServer {
        self.tls.check();
        NatsServer::launch(self)
    }

    /// Renders the config file for one start of the server.
    pub(crate) fn render(&self, place: &Placement<'_>) -> String {
        let mut conf = format!(
            "# Written by nats-testkit.\n\
             server_name: {name}\n\
             listen: {listen}\n\
             log_file: {log}\n",
            name = quote(place.name),
            listen = quote(&format!("127.0.0.1:{}", place.port)),
            log = quote_path(place.log_file),
        );
        if let Some(port) = place.monitor_port {
            conf += &format!("http: {}\n", quote(&format!("127.0.0.1:{port}")));
        }
        if self.jetstream {
            conf += &format!(
                "jetstream {{ store_dir: {} }}\n",
                quote_path(place.store_dir)
            );
        }
        if let Some(bytes) = self.max_payload {
            conf += &format!("max_payload: {bytes}\n");
        }
        match &self.auth {
            Auth::None => {}
            Auth::UserPassword { user, password } => {
                conf += &format!(
                    "authorization {{ user: {}, password: {} }}\n",
                    quote(user),
                    quote(password)
                );
            }
            Auth::Token(token) => {
                conf += &format!("authorization {{ token: {} }}\n", quote(token));
            }
            Auth::Nkeys(keys) => {
                let users: Vec<String> = keys
                    .iter()
                    .map(|key| format!("{{ nkey: {} }}", quote(key)))
                    .collect();
                conf += &format!("authorization {{ users: [{}] }}\n", users.join(", "));
            }
            Auth::Operator(config) => conf += &config.render(),
        }
        conf += &self.tls.render();
        conf += &self.extra_config;
        conf
    }
}

/// Where one start of a server lives: the values `render` needs beside the settings.
pub(crate) struct Placement<'a> {
    pub name: &'a str,
    pub port: u16,
    pub monitor_port: Option<u16>,
    pub store_dir: &'a Path,
    pub log_file: &'a Path,
}

/// A double-quoted nats-server config string. Quoting matters beyond spaces: unquoted,
/// `$NAME` is a variable reference and a value like `1k` is a number.
///
/// The config lexer knows the escapes `\"` and `\\` (and `\t \n \r`), not JSON's
/// `\u`, so control characters are refused rather than mangled.
pub(crate) fn quote(value: &str) -> String {
    assert!(
        !value.chars().any(char::is_control),
        "nats-testkit cannot write control characters into a nats-server config: {value:?}"
    );
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

pub(crate) fn quote_path(path: &Path) -> String {
    let text = path.to_str().unwrap_or_else(|| {
        panic!("nats-testkit needs UTF-8 paths for the server config, got {path:?}")
    });
    quote(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement() -> Placement<'static> {
        Placement {
            name: "t1",
            port: 14222,
            monitor_port: None,
            store_dir: Path::new("/tmp/x/store"),
            log_file: Path::new("/tmp/x/nats-server.log"),
        }
    }

    #[test]
    fn default_server_has_jetstream_and_no_auth() {
        let conf = ServerBuilder::default().render(&placement());
        assert!(conf.contains("listen: \"127.0.0.1:14222\"\n"), "{conf}");
        assert!(
            conf.contains("jetstream { store_dir: \"/tmp/x/store\" }\n"),
            "{conf}"
        );
        assert!(!conf.contains("authorization"), "{conf}");
        assert!(!conf.contains("http:"), "{conf}");
    }

    #[test]
    fn settings_become_config_keys() {
        let conf = ServerBuilder::default()
            .jetstream(false)
            .max_payload(2048)
            .token("tok")
            .config("max_connections: 3")
            .render(&Placement {
                monitor_port: Some(18222),
                ..placement()
            });
        assert!(!conf.contains("jetstream"), "{conf}");
        assert!(conf.contains("max_payload: 2048\n"), "{conf}");
        assert!(
            conf.contains("authorization { token: \"tok\" }\n"),
            "{conf}"
        );
        assert!(conf.contains("http: \"127.0.0.1:18222\"\n"), "{conf}");
        assert!(conf.ends_with("max_connections: 3\n"), "{conf}");
    }

    #[test]
    fn the_last_auth_setting_wins() {
        let conf = ServerBuilder::default()
            .token("tok")
            .user("u", "p")
            .render(&placement());
        assert!(conf.contains("authorization { user: \"u\", password: \"p\" }"));
        assert!(!conf.contains("tok"));
    }

    #[test]
    fn nkey_users_accumulate_and_replace_other_auth() {
        let conf = ServerBuilder::default()
            .user("u", "p")
            .nkey_user("UA")
            .nkey_user("UB")
            .render(&placement());
        assert!(
            conf.contains("authorization { users: [{ nkey: \"UA\" }, { nkey: \"UB\" }] }\n"),
            "{conf}"
        );
        assert!(!conf.contains("password"), "{conf}");
    }

    #[test]
    fn operator_mode_preloads_both_accounts_and_has_no_authorization_block() {
        let auth = JwtAuth::new();
        let conf = ServerBuilder::default()
            .token("tok")
            .operator(&auth)
            .render(&placement());
        assert!(!conf.contains("authorization"), "{conf}");
        assert!(conf.contains("resolver: MEMORY\n"), "{conf}");
        let system = auth.system_account_public_key();
        assert!(
            conf.contains(&format!("system_account: \"{system}\"\n")),
            "{conf}"
        );
        for account in [system, auth.account_public_key()] {
            assert!(conf.contains(&format!("  {account}: \"eyJ")), "{conf}");
        }
        let operator_line = conf.lines().find(|l| l.starts_with("operator: ")).unwrap();
        let path = operator_line
            .trim_start_matches("operator: ")
            .trim_matches('"');
        let jwt = std::fs::read_to_string(path).unwrap();
        assert!(
            jwt.starts_with("eyJ") && jwt.split('.').count() == 3,
            "{jwt}"
        );
    }

    #[test]
    #[should_panic(expected = "add .tls(&pki)")]
    fn tls_options_without_certificates_are_refused() {
        let _ = ServerBuilder::default().tls_verify_clients(true).start();
    }

    #[test]
    fn quoting_escapes_quotes_and_backslashes_and_keeps_dollars_literal() {
        assert_eq!(quote(r#"a"b\c$D"#), r#""a\"b\\c$D""#);
    }

    #[test]
    #[should_panic(expected = "control characters")]
    fn quoting_refuses_control_characters() {
        quote("a\nb");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let builder = ServerBuilder::default().user("alice", "hunter2");
        let shown = format!("{builder:?}");
        assert!(
            shown.contains("alice") && !shown.contains("hunter2"),
            "{shown}"
        );
        let shown = format!("{:?}", ServerBuilder::default().token("t0ken"));
        assert!(!shown.contains("t0ken"), "{shown}");
    }
}
