//! The typed configurations parsed from a validated [`Options`] map: how to connect
//! ([`ConnectionConfig`], built when the sink connects, so `${VAR}`s are read then) and
//! how to route and encode ([`SinkConfig`], built when the sink table is created).
//! Secrets live in [`Secret`], whose `Debug` shows `***`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{NatsSinkError, Result};
use crate::kv::options::KeySpec;
use crate::options::message::{PayloadFormat, TtlSpec, header_fields, payload, ttl};
use crate::options::values::{parse_headers, parse_servers, redact_userinfo};
use crate::options::{
    ALLOW_SYSTEM_SUBJECTS, ATOMIC_BATCH_SIZE, CONFIRM_TIMEOUT, CONNECT_TIMEOUT, CREDENTIALS_FILE,
    DEAD_LETTER_SUBJECT, DELIVERY, EXPECTED_STREAM, HEADERS, HEADERS_FIELD, JWT, MAX_IN_FLIGHT,
    MAX_IN_FLIGHT_BYTES, MSG_ID_FIELD, NKEY_SEED, NKEY_SEED_FILE, ON_ERROR, Options, PASSWORD,
    PAYLOAD_INCLUDE_ROUTING, REPLY_TO_FIELD, RETRY_TIMEOUT, SERVERS, STREAM, SUBJECT,
    SUBJECT_FIELD, SUBJECT_PREFIX, TLS, TLS_CA_FILE, TLS_CERT_FILE, TLS_FIRST, TLS_KEY_FILE, TOKEN,
    USERNAME, tls_conflict,
};
use crate::subject::rules::SubjectRules;

/// A secret value: `Debug` shows `***`, and there is no `Display`.
#[derive(Clone)]
pub(crate) struct Secret(pub(crate) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How to authenticate. Files are read when the sink connects (see `security`).
#[derive(Debug, Clone)]
pub(crate) enum Auth {
    None,
    UserPassword {
        user: String,
        password: Secret,
    },
    Token(Secret),
    /// A `.creds` file: user JWT and nkey seed.
    CredentialsFile(PathBuf),
    /// An nkey seed: nkey authentication, or with a user JWT, JWT authentication.
    NKey {
        seed: Seed,
        jwt: Option<Secret>,
    },
}

/// Where an nkey seed comes from.
#[derive(Debug, Clone)]
pub(crate) enum Seed {
    Inline(Secret),
    File(PathBuf),
}

/// TLS settings. Certificates are always verified; there is no way to turn that off.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tls {
    /// Every connection of the sink must use TLS: the first and every reopened one, to a
    /// listed or an announced server. Set by `tls = 'true'`, any other `tls_*` setting,
    /// or a `tls://` URL in `servers` ([`ConnectionConfig::from_options`]), so that TLS
    /// from a URL does not end where that URL does (async-nats upgrades a `nats://`
    /// server only when the client requires TLS or the server asks for it: async-nats
    /// `connector.rs`, `try_connect_to`).
    pub required: bool,
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key, for mutual TLS.
    pub client: Option<(PathBuf, PathBuf)>,
    /// Handshake before the server's INFO.
    pub first: bool,
}

/// Whether a server URL asks for TLS by its scheme (`tls://`, or `wss://` for a
/// websocket). An unparsable URL is refused when the sink connects.
pub(crate) fn uses_tls(server: &str) -> bool {
    server
        .parse::<async_nats::ServerAddr>()
        .is_ok_and(|addr| addr.tls_required() || addr.scheme() == "wss")
}

/// Everything needed to connect, with `${VAR}` resolved. Built when the sink connects.
#[derive(Clone)]
pub(crate) struct ConnectionConfig {
    pub servers: Vec<String>,
    pub auth: Auth,
    pub tls: Tls,
    pub connect_timeout: Duration,
    /// How long transient failures are retried; `None`: until the statement is cancelled.
    pub retry_timeout: Option<Duration>,
}

impl ConnectionConfig {
    /// Options that cannot go together were refused when `options` was parsed, except
    /// where a `${VAR}` decides it.
    pub(crate) fn from_options(options: &Options) -> Result<Self> {
        let servers = parse_servers(SERVERS, &options.resolved(SERVERS)?.unwrap_or_default())?;
        let path = |name| Ok::<_, NatsSinkError>(options.resolved(name)?.map(PathBuf::from));
        let auth = if let (Some(user), Some(password)) =
            (options.resolved(USERNAME)?, options.resolved(PASSWORD)?)
        {
            Auth::UserPassword {
                user,
                password: Secret(password),
            }
        } else if let Some(token) = options.resolved(TOKEN)? {
            Auth::Token(Secret(token))
        } else if let Some(file) = path(CREDENTIALS_FILE)? {
            Auth::CredentialsFile(file)
        } else if let Some(seed) = options.resolved(NKEY_SEED)? {
            Auth::NKey {
                seed: Seed::Inline(Secret(seed)),
                jwt: options.resolved(JWT)?.map(Secret),
            }
        } else if let Some(file) = path(NKEY_SEED_FILE)? {
            Auth::NKey {
                seed: Seed::File(file),
                jwt: options.resolved(JWT)?.map(Secret),
            }
        } else {
            Auth::None
        };
        let client = match (path(TLS_CERT_FILE)?, path(TLS_KEY_FILE)?) {
            (Some(cert), Some(key)) => Some((cert, key)),
            _ => None,
        };
        let ca_file = path(TLS_CA_FILE)?;
        let first = options.bool(TLS_FIRST)?;
        // Literal values were checked at parse time; `${VAR}`s only now.
        if options.is_given(TLS) && !options.bool(TLS)? {
            let needs_tls = [
                (TLS_CA_FILE, ca_file.is_some()),
                (TLS_CERT_FILE, client.is_some()),
                (TLS_FIRST, first),
            ];
            if let Some((setting, _)) = needs_tls.iter().find(|(_, set)| *set) {
                return Err(tls_conflict(setting));
            }
        }
        let tls_url = servers.iter().any(|server| uses_tls(server));
        let tls = Tls {
            required: options.bool(TLS)?
                || ca_file.is_some()
                || client.is_some()
                || first
                || tls_url,
            ca_file,
            client,
            first,
        };
        Ok(ConnectionConfig {
            servers,
            auth,
            tls,
            connect_timeout: options.duration(CONNECT_TIMEOUT)?.unwrap_or_default(),
            retry_timeout: options.duration(RETRY_TIMEOUT)?,
        })
    }

    /// The servers for messages and logs, without userinfo.
    pub(crate) fn servers_display(&self) -> String {
        redact_userinfo(&self.servers.join(","))
    }
}

impl fmt::Debug for ConnectionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Server URLs may carry `user:password@`.
        f.debug_struct("ConnectionConfig")
            .field("servers", &self.servers_display())
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("retry_timeout", &self.retry_timeout)
            .finish()
    }
}

/// Where each row's subject comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectSpec {
    Fixed(String),
    Column(String),
    /// A key-value bucket's key from a column (`nats_kv`): `$KV.<bucket>.<key>`.
    Key(KeySpec),
}

/// Where messages go and what confirms them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Core NATS: a batch is confirmed by a round trip through the server.
    Core,
    /// JetStream: every message is acknowledged by the stream.
    JetStream(JetStreamConfig),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JetStreamConfig {
    pub stream: String,
    pub max_in_flight: usize,
    /// Bytes of messages (payload and headers) that may wait for their acks at once
    /// (`max_in_flight_bytes`).
    pub max_in_flight_bytes: usize,
    /// Send `Nats-Expected-Stream: <stream>` with every message.
    pub expected_stream: bool,
    /// `Some(rows per atomic batch)` for `delivery = 'exactly_once'`.
    pub atomic_batch: Option<usize>,
}

/// What happens to a row that can never be delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OnError {
    Fail,
    Skip,
    DeadLetter(String),
}

/// The sink's routing, payload and delivery settings, with `${VAR}` resolved. Built at
/// table creation.
#[derive(Debug, Clone)]
pub(crate) struct SinkConfig {
    pub subject: SubjectSpec,
    /// What each row's subject must satisfy (`subject_prefix`, `allow_system_subjects`).
    pub subject_rules: SubjectRules,
    pub reply_to_field: Option<String>,
    pub msg_id_field: Option<String>,
    pub headers: Vec<(String, String)>,
    /// Columns sent as headers named after them (`header_fields`).
    pub header_fields: Vec<String>,
    /// A map column whose entries are sent as headers (`headers_field`).
    pub headers_field: Option<String>,
    pub ttl: Option<TtlSpec>,
    pub payload: PayloadFormat,
    pub payload_include_routing: bool,
    pub confirm_timeout: Duration,
    pub mode: Mode,
    pub on_error: OnError,
}

/// `max_in_flight_bytes` (declared by the sink and by `nats_kv` under `name`), as a
/// byte count the window compares with.
pub(crate) fn window_bytes(options: &Options, name: &'static str) -> Result<usize> {
    let bytes = options.bytes(name)?.unwrap_or(u64::MAX);
    Ok(usize::try_from(bytes).unwrap_or(usize::MAX))
}

pub(crate) fn invalid(option: &str, problem: impl Into<String>) -> NatsSinkError {
    NatsSinkError::InvalidOption {
        option: option.into(),
        problem: problem.into(),
    }
}

impl SinkConfig {
    pub(crate) fn from_options(options: &Options) -> Result<Self> {
        let subject = match (options.resolved(SUBJECT)?, options.resolved(SUBJECT_FIELD)?) {
            (Some(fixed), None) => SubjectSpec::Fixed(fixed),
            (None, Some(column)) => SubjectSpec::Column(column),
            (Some(_), Some(_)) => {
                return Err(invalid(
                    SUBJECT,
                    "give either 'subject' (fixed) or 'subject_field' (a column), not both",
                ));
            }
            (None, None) => {
                return Err(invalid(
                    SUBJECT_FIELD,
                    "missing: give 'subject_field' (the column holding each row's subject) or a fixed 'subject'",
                ));
            }
        };
        let subject_rules = SubjectRules {
            allow_system: options.bool(ALLOW_SYSTEM_SUBJECTS)?,
            prefix: options.resolved(SUBJECT_PREFIX)?,
            allow_inbox: false,
        };
        if let SubjectSpec::Fixed(fixed) = &subject {
            subject_rules
                .check(fixed)
                .map_err(|problem| invalid(SUBJECT, format!("'{fixed}' {problem}")))?;
        }
        let msg_id_field = options.resolved(MSG_ID_FIELD)?;
        let reply_to_field = options.resolved(REPLY_TO_FIELD)?;
        let mode = mode(options, msg_id_field.is_some())?;
        if reply_to_field.is_some() && mode != Mode::Core {
            return Err(invalid(
                REPLY_TO_FIELD,
                "applies to core NATS only: in JetStream mode the reply subject carries the stream's ack; drop 'reply_to_field' or 'stream'",
            ));
        }
        let headers = match options.resolved(HEADERS)? {
            Some(h) => parse_headers(HEADERS, &h)?,
            None => Vec::new(),
        };
        let ttl = ttl(options)?;
        let header_fields = header_fields(options, &headers, &mode, msg_id_field.is_some(), &ttl)?;
        let headers_field = options.resolved(HEADERS_FIELD)?;
        if let Some(map) = &headers_field
            && header_fields.contains(map)
        {
            return Err(invalid(
                HEADERS_FIELD,
                format!(
                    "column '{map}' is in 'header_fields' too: a column is either one header or a map of them"
                ),
            ));
        }
        let payload = payload(options)?;
        Ok(SinkConfig {
            subject,
            subject_rules,
            reply_to_field,
            mode,
            msg_id_field,
            headers,
            header_fields,
            headers_field,
            ttl,
            payload,
            payload_include_routing: options.bool(PAYLOAD_INCLUDE_ROUTING)?,
            confirm_timeout: options.duration(CONFIRM_TIMEOUT)?.unwrap_or_default(),
            on_error: on_error(options)?,
        })
    }
}

/// Core or JetStream, and the JetStream settings, checked together: each JetStream-only
/// option without `stream` is refused rather than ignored.
fn mode(options: &Options, has_msg_id: bool) -> Result<Mode> {
    let exactly_once = options.choice(DELIVERY)? == Some("exactly_once");
    let Some(stream) = options.resolved(STREAM)? else {
        for name in [
            MAX_IN_FLIGHT,
            MAX_IN_FLIGHT_BYTES,
            EXPECTED_STREAM,
            ATOMIC_BATCH_SIZE,
        ] {
            if options.is_given(name) {
                return Err(invalid(
                    name,
                    "applies to JetStream only: give 'stream' too",
                ));
            }
        }
        if exactly_once {
            return Err(invalid(
                DELIVERY,
                "'exactly_once' needs JetStream: give 'stream' (a stream with allow_atomic) and 'msg_id_field'; core NATS is at-most-once across crashes",
            ));
        }
        return Ok(Mode::Core);
    };
    // The name goes into JetStream API subjects and, with expected_stream, into a header
    // (where a line break would panic in async-nats). Stream names exclude spaces, tabs,
    // '.', '*', '>' and path separators (docs.nats.io, "Naming Streams, Consumers, and
    // Accounts"); any other whitespace or control character is refused with them.
    if stream.is_empty()
        || stream.contains(|c: char| {
            c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\')
        })
    {
        return Err(invalid(
            STREAM,
            format!(
                "{stream:?} is not a stream name (no whitespace, control characters, '.', '*', '>', '/' or '\\')"
            ),
        ));
    }
    let expected_stream = match options.resolved(EXPECTED_STREAM)? {
        Some(expected) if expected != stream => {
            return Err(invalid(
                EXPECTED_STREAM,
                format!(
                    "'{expected}' differs from 'stream' = '{stream}': every publish would be refused; give the same name"
                ),
            ));
        }
        Some(_) => true,
        None => false,
    };
    if exactly_once && !has_msg_id {
        return Err(invalid(
            DELIVERY,
            "'exactly_once' needs 'msg_id_field': a rerun recognises committed batches by their message ids",
        ));
    }
    if !exactly_once && options.is_given(ATOMIC_BATCH_SIZE) {
        return Err(invalid(
            ATOMIC_BATCH_SIZE,
            "applies to delivery = 'exactly_once' only",
        ));
    }
    // Atomic batches go one at a time: their size is the window.
    for name in [MAX_IN_FLIGHT, MAX_IN_FLIGHT_BYTES] {
        if exactly_once && options.is_given(name) {
            return Err(invalid(
                name,
                "does not apply to delivery = 'exactly_once', which commits one atomic batch at a time: size them with atomic_batch_size",
            ));
        }
    }
    Ok(Mode::JetStream(JetStreamConfig {
        stream,
        max_in_flight: options.count(MAX_IN_FLIGHT)?.unwrap_or(1) as usize,
        max_in_flight_bytes: window_bytes(options, MAX_IN_FLIGHT_BYTES)?,
        expected_stream,
        atomic_batch: if exactly_once {
            Some(options.count(ATOMIC_BATCH_SIZE)?.unwrap_or(1) as usize)
        } else {
            None
        },
    }))
}

/// `on_error` and `dead_letter_subject`, read alike by the sink (rows it cannot deliver)
/// and the source (messages it cannot decode): both declare them under these names.
pub(crate) fn on_error(options: &Options) -> Result<OnError> {
    let dead_letter_subject = options.resolved(DEAD_LETTER_SUBJECT)?;
    match (options.choice(ON_ERROR)?, dead_letter_subject) {
        (Some("dead_letter"), Some(subject)) => Ok(OnError::DeadLetter(subject)),
        (Some("dead_letter"), None) => Err(invalid(
            DEAD_LETTER_SUBJECT,
            "missing: on_error = 'dead_letter' needs the subject where what cannot be handled goes",
        )),
        (_, Some(_)) => Err(invalid(
            DEAD_LETTER_SUBJECT,
            "applies only with on_error = 'dead_letter'",
        )),
        (Some("skip"), None) => Ok(OnError::Skip),
        _ => Ok(OnError::Fail),
    }
}
