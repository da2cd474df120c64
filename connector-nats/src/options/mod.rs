//! The options of `nats_sink` and `nats_source`, each declared once.
//!
//! [`CONNECTION_OPTIONS`] (servers, credentials, TLS) are shared by both connectors, so one
//! `CREATE CONNECTION` serves a sink and a source; [`SINK_OPTIONS`] and the source's own
//! (`source/options.rs`) follow. An [`OptionTable`] ([`OPTIONS`] for the sink) joins them:
//! key validation, the unknown-option suggestion, defaults, redaction and the engine's
//! `connectors` listing all read it. The value parsers here are shared with `config`,
//! which builds the typed configurations from a validated [`Options`] map.

pub(crate) mod config;
pub(crate) mod env_vars;
pub(crate) mod message;
pub(crate) mod values;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use crate::error::{NatsSinkError, Result};
use crate::options::values::{
    ValueKind, parse_bool, parse_bytes, parse_choice, parse_count, parse_duration, redact_userinfo,
};

/// Where an option may be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionScope {
    /// Accepted in `CREATE CONNECTION` and on the sink.
    Connection,
    /// Accepted only on the sink (`CREATE TABLE ... WITH`, `INSERT ... WITH`, `OPTIONS`).
    Sink,
    /// Accepted only on the source table (`CREATE TABLE ... WITH`).
    Source,
}

/// The declaration of one option.
#[derive(Debug, PartialEq, Eq)]
pub struct OptionSpec {
    pub name: &'static str,
    pub scope: OptionScope,
    /// What the value must look like; checked when the options are parsed.
    pub kind: ValueKind,
    /// The value used when the option is not given.
    pub default: Option<&'static str>,
    /// A secret's value is never printed (errors, `Debug`, `EXPLAIN`, listings).
    pub secret: bool,
    pub doc: &'static str,
}

/// Declares a list of options: a constant per name, and the static list `$list`.
macro_rules! declare_options {
    ($list:ident; $( $konst:ident = $name:literal, $scope:ident, $kind:expr, default $default:expr, secret $secret:literal, $doc:literal; )*) => {
        $( #[doc = $doc] pub const $konst: &str = $name; )*
        /// These options, in documentation order.
        pub static $list: &[$crate::options::OptionSpec] = &[
            $( $crate::options::OptionSpec { name: $name, scope: $crate::options::OptionScope::$scope, kind: $kind, default: $default, secret: $secret, doc: $doc }, )*
        ];
    };
}
pub(crate) use declare_options;

/// Every option of one connector: the shared connection options, then its own.
#[derive(Debug, PartialEq, Eq)]
pub struct OptionTable {
    /// The connector's name in SQL, for messages.
    pub connector: &'static str,
    parts: &'static [&'static [OptionSpec]],
}

impl OptionTable {
    pub(crate) const fn new(
        connector: &'static str,
        parts: &'static [&'static [OptionSpec]],
    ) -> Self {
        OptionTable { connector, parts }
    }

    /// Every option, in documentation order.
    pub fn iter(&self) -> impl Iterator<Item = &'static OptionSpec> + Clone + use<> {
        self.parts.iter().flat_map(|part| part.iter())
    }

    /// How many options there are.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|part| part.len()).sum()
    }

    /// Whether the table declares no option.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The declaration of `name`, if it is an option of this table.
    pub fn spec(&self, name: &str) -> Option<&'static OptionSpec> {
        self.iter().find(|s| s.name == name)
    }
}

/// Every option of `nats_sink`.
pub static OPTIONS: OptionTable =
    OptionTable::new(crate::CONNECTOR_NAME, &[CONNECTION_OPTIONS, SINK_OPTIONS]);

/// The values of `delivery`.
pub const DELIVERY_MODES: &[&str] = &["at_least_once", "exactly_once"];
/// The values of `on_error`.
pub const ON_ERROR_POLICIES: &[&str] = &["fail", "skip", "dead_letter"];
/// Payload formats the sink can write.
pub const FORMATS: &[&str] = &["json", "raw"];

/// The largest atomic batch a nats-server accepts by default (larger batches fail with JetStream error 10199, "atomic publish batch is too large").
pub const MAX_ATOMIC_BATCH: u64 = 1000;

declare_options! { CONNECTION_OPTIONS;
    SERVERS = "servers", Connection, ValueKind::Servers, default Some("nats://127.0.0.1:4222"), secret false,
        "NATS server URLs: a JSON array ('[\"nats://a:4222\",\"nats://b:4222\"]') or a comma-separated list.";
    USERNAME = "username", Connection, ValueKind::Text, default None, secret false,
        "User name for user/password authentication (needs 'password').";
    PASSWORD = "password", Connection, ValueKind::Text, default None, secret true,
        "Password for user/password authentication; use '${VAR}' to read it from the environment.";
    TOKEN = "token", Connection, ValueKind::Text, default None, secret true,
        "Token authentication.";
    CREDENTIALS_FILE = "credentials_file", Connection, ValueKind::File, default None, secret false,
        "A '.creds' file (user JWT and nkey seed) for decentralized JWT authentication, as written by 'nsc'. Its contents are never shown.";
    NKEY_SEED = "nkey_seed", Connection, ValueKind::Text, default None, secret true,
        "A user nkey seed ('SU...'): nkey authentication, or with 'jwt' JWT authentication. Use '${VAR}', or 'nkey_seed_file'.";
    NKEY_SEED_FILE = "nkey_seed_file", Connection, ValueKind::File, default None, secret false,
        "A file holding the user nkey seed, instead of 'nkey_seed'.";
    JWT = "jwt", Connection, ValueKind::Text, default None, secret true,
        "A user JWT; the server's challenge is signed with 'nkey_seed' (or 'nkey_seed_file').";
    TLS = "tls", Connection, ValueKind::Bool, default Some("false"), secret false,
        "'true': refuse to connect without TLS. Any 'tls_*' setting implies it ('false' beside one is an error), and so does a 'tls://' URL in 'servers', whatever this says: then every connection, to any listed or announced server, requires TLS. Certificates are always verified.";
    TLS_CA_FILE = "tls_ca_file", Connection, ValueKind::File, default None, secret false,
        "PEM file of the CA certificates that sign the server's certificate; without it the system's roots are used.";
    TLS_CERT_FILE = "tls_cert_file", Connection, ValueKind::File, default None, secret false,
        "PEM client certificate for mutual TLS (needs 'tls_key_file').";
    TLS_KEY_FILE = "tls_key_file", Connection, ValueKind::File, default None, secret false,
        "PEM private key of 'tls_cert_file'. Its contents are never shown.";
    TLS_FIRST = "tls_first", Connection, ValueKind::Bool, default Some("false"), secret false,
        "'true': start the TLS handshake before the server's INFO (servers with 'handshake_first').";
    CONNECT_TIMEOUT = "connect_timeout", Connection, ValueKind::Duration, default Some("5s"), secret false,
        "How long one attempt to connect may take (e.g. '500ms', '5s', '1m').";
    RETRY_TIMEOUT = "retry_timeout", Connection, ValueKind::Duration, default None, secret false,
        "How long the sink keeps retrying after a transient failure (server down, disconnect, timeout, no quorum, stream full) before the statement fails. Unset: retry until the statement is cancelled.";
}

declare_options! { SINK_OPTIONS;
    SUBJECT = "subject", Sink, ValueKind::Subject, default None, secret false,
        "Fixed subject for every row. Give either 'subject' or 'subject_field'.";
    SUBJECT_FIELD = "subject_field", Sink, ValueKind::Text, default None, secret false,
        "Column holding each row's subject (a string column).";
    REPLY_TO_FIELD = "reply_to_field", Sink, ValueKind::Text, default None, secret false,
        "Column holding each row's reply subject; a null value sends no reply subject.";
    HEADERS = "headers", Sink, ValueKind::Headers, default None, secret false,
        "Static headers added to every message, as a JSON object of strings ('{\"source\":\"sql\"}').";
    HEADER_FIELDS = "header_fields", Sink, ValueKind::Text, default None, secret false,
        "Comma-separated columns whose values are sent as headers named after them ('trace_id,tenant'): string, integer, boolean or timestamp columns; a null sends no header.";
    HEADERS_FIELD = "headers_field", Sink, ValueKind::Text, default None, secret false,
        "A map column (MAP<VARCHAR, VARCHAR>) whose entries are sent as headers, for names known only at run time; a null map or value sends none.";
    TTL = "ttl", Sink, ValueKind::Ttl, default None, secret false,
        "How long the stream keeps each message, sent as 'Nats-TTL' (nats-server 2.11+; the stream needs allow_msg_ttl): '90s', '1h', '7d', a number of seconds, or 'never'.";
    TTL_FIELD = "ttl_field", Sink, ValueKind::Text, default None, secret false,
        "Column holding each row's TTL, sent as 'Nats-TTL': a duration text ('90s', '1h', 'never') or an integer number of seconds; a null sends none.";
    FORMAT = "format", Sink, ValueKind::Choice(FORMATS), default Some("json"), secret false,
        "Payload format. 'json': one JSON object per row. 'raw': the bytes of 'payload_field', unchanged.";
    PAYLOAD_FIELD = "payload_field", Sink, ValueKind::Text, default None, secret false,
        "format = 'raw': the column whose bytes are the message (binary or string); a null makes the row undeliverable.";
    PAYLOAD_INCLUDE_ROUTING = "payload_include_routing", Sink, ValueKind::Bool, default Some("false"), secret false,
        "Keep the subject, reply-to, header and TTL columns in the JSON payload ('true') or leave them out ('false').";
    CONFIRM_TIMEOUT = "confirm_timeout", Sink, ValueKind::Duration, default Some("5s"), secret false,
        "How long to wait for the server to confirm a batch (core, counted once the client has written it) or a message (JetStream ack) before it is sent again.";
    STREAM = "stream", Sink, ValueKind::Text, default None, secret false,
        "JetStream mode: publish into this stream and wait for its acks. The stream must exist and capture every subject.";
    MAX_IN_FLIGHT = "max_in_flight", Sink, ValueKind::Count { min: 1, max: 65536 }, default Some("4096"), secret false,
        "JetStream: how many messages may wait for their ack at once (the default suits a stream with three replicas; see Delivery). Not with exactly_once, whose atomic_batch_size sizes what it sends at once.";
    MAX_IN_FLIGHT_BYTES = "max_in_flight_bytes", Sink, WINDOW_BYTES, default Some(DEFAULT_WINDOW_BYTES), secret false,
        "JetStream: how many bytes of messages (payload and headers) may wait for their acks at once ('64MiB', '512KiB'; 'MB' and a bare 'M' count in 1000s). Sending pauses once they reach it (the message that crosses it still goes) or at max_in_flight, whichever comes first, so large rows hold bounded memory. Not with exactly_once.";
    MSG_ID_FIELD = "msg_id_field", Sink, ValueKind::Text, default None, secret false,
        "Column whose value is sent as 'Nats-Msg-Id', so the stream drops duplicates within its duplicate window (a string or integer column; it stays in the payload).";
    EXPECTED_STREAM = "expected_stream", Sink, ValueKind::Text, default None, secret false,
        "JetStream: send 'Nats-Expected-Stream' with this name (it must equal 'stream'), so a message captured by another stream is refused.";
    DELIVERY = "delivery", Sink, ValueKind::Choice(DELIVERY_MODES), default Some("at_least_once"), secret false,
        "'exactly_once' commits each run of rows as one JetStream atomic batch (needs 'stream', 'msg_id_field' and a stream with allow_atomic).";
    ATOMIC_BATCH_SIZE = "atomic_batch_size", Sink, ValueKind::Count { min: 1, max: MAX_ATOMIC_BATCH }, default Some("1000"), secret false,
        "exactly_once: rows per atomic batch; keep it the same across reruns so batch boundaries repeat.";
    ON_ERROR = "on_error", Sink, ValueKind::Choice(ON_ERROR_POLICIES), default Some("fail"), secret false,
        "A row that can never be delivered (invalid subject, oversize, unencodable value): 'fail' the statement, 'skip' it (counted and logged), or 'dead_letter' it.";
    SUBJECT_PREFIX = "subject_prefix", Sink, ValueKind::SubjectPrefix, default None, secret false,
        "Every row's subject must start with this prefix (e.g. 'orders.'); a row outside it is refused and follows 'on_error'.";
    ALLOW_SYSTEM_SUBJECTS = "allow_system_subjects", Sink, ValueKind::Bool, default Some("false"), secret false,
        "Let rows publish to system and internal subjects (a first token starting with '$', such as '$JS.', '$SYS.', '$KV.', '$O.', or '_INBOX.'); refused by default.";
    DEAD_LETTER_SUBJECT = "dead_letter_subject", Sink, ValueKind::Subject, default None, secret false,
        "on_error = 'dead_letter': where undeliverable rows go, with headers giving the reason, original subject and row number.";
}

/// The kind and the default of `max_in_flight_bytes`, for the sink and `nats_kv` alike.
pub(crate) const WINDOW_BYTES: ValueKind = ValueKind::Bytes {
    min: 1,
    max: 1 << 32,
};
pub(crate) const DEFAULT_WINDOW_BYTES: &str = "64MiB";

/// The sink's option reference as a Markdown table, generated from [`OPTIONS`] (the
/// README embeds this output; a test keeps the two identical).
pub fn markdown_table() -> String {
    markdown_rows(OPTIONS.iter(), "connection or sink")
}

/// An option reference as a Markdown table: `specs` in order, connection options marked
/// as given `where` (`connection or sink`, ...).
pub fn markdown_rows<'a>(
    specs: impl Iterator<Item = &'a OptionSpec>,
    connection_scope: &str,
) -> String {
    let mut out =
        String::from("| option | where | value | default | description |\n|---|---|---|---|---|\n");
    for spec in specs {
        let scope = match spec.scope {
            OptionScope::Connection => connection_scope,
            OptionScope::Sink => "sink",
            OptionScope::Source => "source",
        };
        let default = spec
            .default
            .map_or("(none)".to_string(), |d| format!("`{d}`"));
        let secret = if spec.secret {
            " Secret: never shown."
        } else {
            ""
        };
        out.push_str(&format!(
            "| `{}` | {scope} | {} | {default} | {}{secret} |\n",
            spec.name,
            spec.kind.describe(),
            spec.doc
        ));
    }
    out
}

/// The declaration of `name`, if it is an option of the sink.
pub fn spec(name: &str) -> Option<&'static OptionSpec> {
    OPTIONS.spec(name)
}

/// A validated option map: every key is a declared option (lowercase).
///
/// Values are kept as given (with `${VAR}` unresolved) so that `Debug` and `EXPLAIN` show
/// what the user wrote, with secrets masked.
#[derive(Clone, PartialEq, Eq)]
pub struct Options(BTreeMap<&'static str, String>, &'static OptionTable);

impl Options {
    /// The sink's options: [`Options::parse_for`] with [`OPTIONS`].
    pub fn parse(options: &HashMap<String, String>, connection_only: bool) -> Result<Self> {
        Self::parse_for(&OPTIONS, options, connection_only)
    }

    /// Validates keys against `table` and the values that need no environment. With
    /// `connection_only`, keys that are not connection options are refused (they belong
    /// on the table, not in `CREATE CONNECTION`).
    pub fn parse_for(
        table: &'static OptionTable,
        options: &HashMap<String, String>,
        connection_only: bool,
    ) -> Result<Self> {
        let mut map = BTreeMap::new();
        for (key, value) in options {
            let key = key.to_ascii_lowercase();
            let spec = table
                .spec(&key)
                .ok_or_else(|| unknown_option(table, &key))?;
            if connection_only && spec.scope != OptionScope::Connection {
                return Err(NatsSinkError::NotAConnectionOption { option: key });
            }
            env_vars::check_syntax(spec.name, value)?;
            // A value with `${VAR}` is checked once it is resolved.
            if !env_vars::has_variables(value) {
                spec.kind.check(spec.name, value)?;
            }
            map.insert(spec.name, value.clone());
        }
        let options = Options(map, table);
        options.check_combinations()?;
        Ok(options)
    }

    /// The name in SQL of the connector these options are for.
    pub fn connector(&self) -> &'static str {
        self.1.connector
    }

    /// The declaration of `name` in this map's table.
    fn spec(&self, name: &str) -> Option<&'static OptionSpec> {
        self.1.spec(name)
    }

    /// Whether the user gave `name` (as opposed to its default applying).
    pub fn is_given(&self, name: &'static str) -> bool {
        self.0.contains_key(name)
    }

    /// The value given for `name`, or its declared default; `${VAR}` left unresolved.
    pub fn raw(&self, name: &'static str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .or_else(|| self.spec(name).and_then(|s| s.default))
    }

    /// The value for `name` with `${VAR}` resolved from the environment and checked
    /// against the option's kind.
    pub fn resolved(&self, name: &'static str) -> Result<Option<String>> {
        let Some(raw) = self.raw(name) else {
            return Ok(None);
        };
        let value = env_vars::resolve(name, raw)?;
        if env_vars::has_variables(raw)
            && let Some(spec) = self.spec(name)
        {
            spec.kind.check(name, &value)?;
        }
        Ok(Some(value))
    }

    /// A duration option, resolved.
    pub fn duration(&self, name: &'static str) -> Result<Option<Duration>> {
        self.resolved(name)?
            .map(|v| parse_duration(name, &v))
            .transpose()
    }

    /// A boolean option, resolved (`false` when unset without a default).
    pub fn bool(&self, name: &'static str) -> Result<bool> {
        Ok(match self.resolved(name)? {
            Some(v) => parse_bool(name, &v)?,
            None => false,
        })
    }

    /// A count option, resolved.
    pub fn count(&self, name: &'static str) -> Result<Option<u64>> {
        let Some(ValueKind::Count { min, max }) = self.spec(name).map(|s| s.kind) else {
            return Ok(None);
        };
        self.resolved(name)?
            .map(|v| parse_count(name, &v, min, max))
            .transpose()
    }

    /// A size option, resolved, in bytes.
    pub fn bytes(&self, name: &'static str) -> Result<Option<u64>> {
        let Some(ValueKind::Bytes { min, max }) = self.spec(name).map(|s| s.kind) else {
            return Ok(None);
        };
        self.resolved(name)?
            .map(|v| parse_bytes(name, &v, min, max))
            .transpose()
    }

    /// A choice option, resolved: one of its declared words.
    pub fn choice(&self, name: &'static str) -> Result<Option<&'static str>> {
        let Some(ValueKind::Choice(choices)) = self.spec(name).map(|s| s.kind) else {
            return Ok(None);
        };
        self.resolved(name)?
            .map(|v| parse_choice(name, &v, choices))
            .transpose()
    }

    /// The options as given, secrets masked: for `Debug`, `EXPLAIN` and logs.
    pub fn redacted(&self) -> Vec<(&'static str, String)> {
        self.0
            .iter()
            .map(|(k, v)| {
                let shown = if self.spec(k).is_some_and(|s| s.secret) {
                    "***".to_string()
                } else if *k == SERVERS {
                    redact_userinfo(v)
                } else {
                    v.clone()
                };
                (*k, shown)
            })
            .collect()
    }

    /// Authentication and TLS options that cannot go together are refused at CREATE time,
    /// naming both options.
    fn check_combinations(&self) -> Result<()> {
        let conflict = |option: &str, other: &str, advice: &str| NatsSinkError::InvalidOption {
            option: option.into(),
            problem: format!("cannot be combined with '{other}': {advice}"),
        };
        let given: Vec<&str> = AUTH_METHODS
            .iter()
            .filter_map(|method| method.iter().copied().find(|o| self.is_given(o)))
            .collect();
        if let [first, second, ..] = given[..] {
            return Err(conflict(second, first, "choose one way to authenticate"));
        }
        if self.is_given(USERNAME) != self.is_given(PASSWORD) {
            let (missing, present) = if self.is_given(USERNAME) {
                (PASSWORD, USERNAME)
            } else {
                (USERNAME, PASSWORD)
            };
            return Err(missing_partner(missing, present));
        }
        if self.is_given(NKEY_SEED) && self.is_given(NKEY_SEED_FILE) {
            return Err(conflict(NKEY_SEED_FILE, NKEY_SEED, "give the seed one way"));
        }
        if self.is_given(JWT) && !self.is_given(NKEY_SEED) && !self.is_given(NKEY_SEED_FILE) {
            return Err(NatsSinkError::InvalidOption {
                option: JWT.into(),
                problem: "needs 'nkey_seed' or 'nkey_seed_file': the user's seed signs the server's challenge".into(),
            });
        }
        if self.is_given(TLS_CERT_FILE) != self.is_given(TLS_KEY_FILE) {
            let (missing, present) = if self.is_given(TLS_CERT_FILE) {
                (TLS_KEY_FILE, TLS_CERT_FILE)
            } else {
                (TLS_CERT_FILE, TLS_KEY_FILE)
            };
            return Err(missing_partner(missing, present));
        }
        // `tls = 'false'` beside a TLS setting is a contradiction, not a preference.
        let tls_off = self
            .0
            .get(TLS)
            .is_some_and(|v| parse_bool(TLS, v).is_ok_and(|on| !on));
        let enabled = |o: &&'static str| match *o {
            // A `${VAR}` value is checked once resolved (see `ConnectionConfig`).
            TLS_FIRST => self
                .0
                .get(TLS_FIRST)
                .is_some_and(|v| parse_bool(o, v).unwrap_or(false)),
            _ => self.is_given(o),
        };
        if let Some(setting) = TLS_SETTINGS.iter().find(|o| tls_off && enabled(o)) {
            return Err(tls_conflict(setting));
        }
        Ok(())
    }
}

/// The ways to authenticate, each as the options that make it up; at most one may be
/// given. An error names the first option given of each.
const AUTH_METHODS: &[&[&str]] = &[
    &[USERNAME, PASSWORD],
    &[TOKEN],
    &[CREDENTIALS_FILE],
    &[NKEY_SEED, NKEY_SEED_FILE, JWT],
];

/// Options that only make sense with TLS.
const TLS_SETTINGS: &[&str] = &[TLS_CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE, TLS_FIRST];

/// `tls = 'false'` beside a setting that needs TLS.
pub(crate) fn tls_conflict(setting: &str) -> NatsSinkError {
    NatsSinkError::InvalidOption {
        option: setting.into(),
        problem: "cannot be combined with tls = 'false': it needs TLS; drop one of them".into(),
    }
}

fn missing_partner(missing: &str, present: &str) -> NatsSinkError {
    NatsSinkError::InvalidOption {
        option: missing.into(),
        problem: format!("missing: '{present}' needs it; give both"),
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.redacted()).finish()
    }
}

fn unknown_option(table: &OptionTable, key: &str) -> NatsSinkError {
    let closest = table
        .iter()
        .map(|s| (strsim::damerau_levenshtein(key, s.name), s.name))
        .min();
    let hint = match closest {
        Some((distance, name)) if distance <= 3.max(key.len() / 3) => {
            format!(" (did you mean '{name}'?)")
        }
        _ => format!(
            "; valid options: {}",
            table.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
        ),
    };
    NatsSinkError::UnknownOption {
        key: key.to_string(),
        connector: table.connector,
        hint,
    }
}

#[cfg(test)]
mod tests;
