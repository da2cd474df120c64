//! The options of `nats_sink`, declared once.
//!
//! [`OPTIONS`] is the single declaration: name, scope, default, secrecy and documentation.
//! Key validation, the unknown-option suggestion, defaults, redaction and the engine's
//! `connectors` listing all read it. The value parsers here are shared with `config`,
//! which builds the typed configurations from a validated [`Options`] map.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use crate::error::{NatsSinkError, Result};
use crate::subject;
use crate::template;

/// Where an option may be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionScope {
    /// Accepted in `CREATE CONNECTION` and on the sink.
    Connection,
    /// Accepted only on the sink (`CREATE TABLE ... WITH`, `INSERT ... WITH`, `OPTIONS`).
    Sink,
}

/// The declaration of one option.
#[derive(Debug)]
pub struct OptionSpec {
    pub name: &'static str,
    pub scope: OptionScope,
    /// The value used when the option is not given.
    pub default: Option<&'static str>,
    /// A secret's value is never printed (errors, `Debug`, `EXPLAIN`, listings).
    pub secret: bool,
    pub doc: &'static str,
}

macro_rules! declare_options {
    ($( $konst:ident = $name:literal, $scope:ident, default $default:expr, secret $secret:literal, $doc:literal; )*) => {
        $( #[doc = $doc] pub const $konst: &str = $name; )*
        /// Every option of `nats_sink`, in documentation order.
        pub static OPTIONS: &[OptionSpec] = &[
            $( OptionSpec { name: $name, scope: OptionScope::$scope, default: $default, secret: $secret, doc: $doc }, )*
        ];
    };
}

declare_options! {
    SERVERS = "servers", Connection, default Some("nats://127.0.0.1:4222"), secret false,
        "NATS server URLs: a JSON array ('[\"nats://a:4222\",\"nats://b:4222\"]') or a comma-separated list.";
    USERNAME = "username", Connection, default None, secret false,
        "User name for user/password authentication (needs 'password').";
    PASSWORD = "password", Connection, default None, secret true,
        "Password for user/password authentication; use '${VAR}' to read it from the environment.";
    TOKEN = "token", Connection, default None, secret true,
        "Token authentication; cannot be combined with 'username'/'password'.";
    CONNECT_TIMEOUT = "connect_timeout", Connection, default Some("5s"), secret false,
        "How long connecting may take before the statement fails (e.g. '500ms', '5s', '1m').";
    SUBJECT = "subject", Sink, default None, secret false,
        "Fixed subject for every row. Give either 'subject' or 'subject_field'.";
    SUBJECT_FIELD = "subject_field", Sink, default None, secret false,
        "Column holding each row's subject (a string column).";
    REPLY_TO_FIELD = "reply_to_field", Sink, default None, secret false,
        "Column holding each row's reply subject; a null value sends no reply subject.";
    HEADERS = "headers", Sink, default None, secret false,
        "Static headers added to every message, as a JSON object of strings ('{\"source\":\"sql\"}').";
    FORMAT = "format", Sink, default Some("json"), secret false,
        "Payload format. 'json': one JSON object per row.";
    PAYLOAD_INCLUDE_ROUTING = "payload_include_routing", Sink, default Some("false"), secret false,
        "Keep the subject and reply-to columns in the JSON payload ('true') or leave them out ('false').";
    CONFIRM_TIMEOUT = "confirm_timeout", Sink, default Some("30s"), secret false,
        "How long to wait for the server to confirm a batch before the statement fails.";
}

/// Payload formats the sink can write.
pub const FORMATS: &[&str] = &["json"];

/// The option reference as a Markdown table, generated from [`OPTIONS`] (the README
/// embeds this output; a test keeps the two identical).
pub fn markdown_table() -> String {
    let mut out = String::from("| option | where | default | description |\n|---|---|---|---|\n");
    for spec in OPTIONS {
        let scope = match spec.scope {
            OptionScope::Connection => "connection or sink",
            OptionScope::Sink => "sink",
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
            "| `{}` | {scope} | {default} | {}{secret} |\n",
            spec.name, spec.doc
        ));
    }
    out
}

/// The declaration of `name`, if it is an option.
pub fn spec(name: &str) -> Option<&'static OptionSpec> {
    OPTIONS.iter().find(|s| s.name == name)
}

/// A validated option map: every key is a declared option (lowercase).
///
/// Values are kept as given (with `${VAR}` unresolved) so that `Debug` and `EXPLAIN` show
/// what the user wrote, with secrets masked.
#[derive(Clone, PartialEq, Eq)]
pub struct Options(BTreeMap<&'static str, String>);

impl Options {
    /// Validates keys and the values that need no environment. With `connection_only`, keys
    /// of sink scope are refused (they belong on the sink, not in `CREATE CONNECTION`).
    pub fn parse(options: &HashMap<String, String>, connection_only: bool) -> Result<Self> {
        let mut map = BTreeMap::new();
        for (key, value) in options {
            let key = key.to_ascii_lowercase();
            let spec = spec(&key).ok_or_else(|| unknown_option(&key))?;
            if connection_only && spec.scope == OptionScope::Sink {
                return Err(NatsSinkError::NotAConnectionOption { option: key });
            }
            template::check_syntax(spec.name, value)?;
            map.insert(spec.name, value.clone());
        }
        let options = Options(map);
        options.check_values()?;
        Ok(options)
    }

    /// The value given for `name`, or its declared default; `${VAR}` left unresolved.
    pub fn raw(&self, name: &'static str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .or_else(|| spec(name).and_then(|s| s.default))
    }

    /// The value for `name` with `${VAR}` resolved from the environment.
    pub fn resolved(&self, name: &'static str) -> Result<Option<String>> {
        self.raw(name)
            .map(|v| template::resolve(name, v))
            .transpose()
    }

    /// The options as given, secrets masked: for `Debug`, `EXPLAIN` and logs.
    pub fn redacted(&self) -> Vec<(&'static str, String)> {
        self.0
            .iter()
            .map(|(k, v)| {
                let shown = if spec(k).is_some_and(|s| s.secret) {
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

    /// Checks every value that does not depend on the environment, so that mistakes show up
    /// at CREATE time rather than at the first INSERT.
    fn check_values(&self) -> Result<()> {
        let literal = |name| self.raw(name).filter(|v| !template::has_variables(v));
        if let Some(v) = literal(SERVERS) {
            parse_servers(v)?;
        }
        for name in [CONNECT_TIMEOUT, CONFIRM_TIMEOUT] {
            if let Some(v) = literal(name) {
                parse_duration(name, v)?;
            }
        }
        if let Some(v) = literal(FORMAT) {
            parse_format(v)?;
        }
        if let Some(v) = literal(PAYLOAD_INCLUDE_ROUTING) {
            parse_bool(PAYLOAD_INCLUDE_ROUTING, v)?;
        }
        if let Some(v) = literal(HEADERS) {
            parse_headers(v)?;
        }
        if let Some(v) = literal(SUBJECT) {
            parse_fixed_subject(v)?;
        }
        if self.0.contains_key(TOKEN)
            && (self.0.contains_key(USERNAME) || self.0.contains_key(PASSWORD))
        {
            return Err(NatsSinkError::InvalidOption {
                option: TOKEN.into(),
                problem:
                    "cannot be combined with 'username'/'password': choose one way to authenticate"
                        .into(),
            });
        }
        if self.0.contains_key(USERNAME) != self.0.contains_key(PASSWORD) {
            return Err(NatsSinkError::InvalidOption {
                option: if self.0.contains_key(USERNAME) {
                    PASSWORD
                } else {
                    USERNAME
                }
                .into(),
                problem: "'username' and 'password' go together: give both".into(),
            });
        }
        Ok(())
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.redacted()).finish()
    }
}

fn unknown_option(key: &str) -> NatsSinkError {
    let closest = OPTIONS
        .iter()
        .map(|s| (strsim::damerau_levenshtein(key, s.name), s.name))
        .min();
    let hint = match closest {
        Some((distance, name)) if distance <= 3.max(key.len() / 3) => {
            format!(" (did you mean '{name}'?)")
        }
        _ => format!(
            "; valid options: {}",
            OPTIONS
                .iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    NatsSinkError::UnknownOption {
        key: key.to_string(),
        hint,
    }
}

/// Removes `user:pass@` from URLs so that a password embedded in a server URL is not shown.
pub(crate) fn redact_userinfo(servers: &str) -> String {
    servers
        .split(',')
        .map(|part| match (part.find("://"), part.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}***@{}", &part[..scheme + 3], &part[at + 1..])
            }
            _ => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `'["nats://a:4222","nats://b:4222"]'` or `'nats://a:4222, nats://b:4222'`.
pub(crate) fn parse_servers(value: &str) -> Result<Vec<String>> {
    let invalid = |problem: String| NatsSinkError::InvalidOption {
        option: SERVERS.into(),
        problem,
    };
    let trimmed = value.trim();
    let servers: Vec<String> = if trimmed.starts_with('[') {
        serde_json::from_str::<Vec<String>>(trimmed).map_err(|e| {
            invalid(format!(
                "not a JSON array of strings ({e}); write '[\"nats://host:4222\"]' or 'nats://host:4222'"
            ))
        })?
    } else {
        trimmed.split(',').map(|s| s.trim().to_string()).collect()
    };
    let servers: Vec<String> = servers.into_iter().filter(|s| !s.is_empty()).collect();
    if servers.is_empty() {
        return Err(invalid(
            "no server given; write e.g. 'nats://127.0.0.1:4222'".into(),
        ));
    }
    for (i, server) in servers.iter().enumerate() {
        let addr = server
            .parse::<async_nats::ServerAddr>()
            .map_err(|e| invalid(format!("server {} is not a server address: {e}", i + 1)))?;
        // Credentials in a URL would be shown wherever the servers are (EXPLAIN, logs).
        if addr.has_user_pass() || addr.username().is_some() {
            return Err(invalid(format!(
                "server {} has credentials in its URL: put them in 'username' and 'password' (or 'token') instead",
                i + 1
            )));
        }
    }
    Ok(servers)
}

/// The longest timeout accepted; a longer one is almost certainly a typo.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

pub(crate) fn parse_duration(option: &str, value: &str) -> Result<Duration> {
    let value = value.trim();
    // A bare number means seconds, as users of other connectors expect.
    let parsed = match value.parse::<f64>() {
        Ok(secs) => Duration::try_from_secs_f64(secs).ok(),
        Err(_) => humantime::parse_duration(value).ok(),
    };
    let invalid = |problem: String| NatsSinkError::InvalidOption {
        option: option.to_string(),
        problem,
    };
    match parsed {
        Some(d) if d > MAX_DURATION => Err(invalid(format!(
            "'{value}' is longer than the maximum of 24h"
        ))),
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(invalid(format!(
            "'{value}' is not a positive duration; write e.g. '500ms', '5s' or '2m'"
        ))),
    }
}

pub(crate) fn parse_fixed_subject(value: &str) -> Result<()> {
    subject::validate(value).map_err(|problem| NatsSinkError::InvalidOption {
        option: SUBJECT.into(),
        problem: format!("'{value}' is not a valid subject: {problem}"),
    })
}

pub(crate) fn parse_bool(option: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(NatsSinkError::InvalidOption {
            option: option.to_string(),
            problem: format!("'{other}' is not a boolean; write 'true' or 'false'"),
        }),
    }
}

pub(crate) fn parse_format(value: &str) -> Result<()> {
    if FORMATS.contains(&value.trim().to_ascii_lowercase().as_str()) {
        Ok(())
    } else {
        Err(NatsSinkError::InvalidOption {
            option: FORMAT.into(),
            problem: format!(
                "'{value}' is not supported; supported formats: {}",
                FORMATS.join(", ")
            ),
        })
    }
}

/// `'{"k": "v", ...}'` into header pairs, checked the way NATS needs them.
pub(crate) fn parse_headers(value: &str) -> Result<Vec<(String, String)>> {
    let invalid = |problem: String| NatsSinkError::InvalidOption {
        option: HEADERS.into(),
        problem,
    };
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(value).map_err(|e| {
            invalid(format!(
                "not a JSON object ({e}); write '{{\"name\": \"value\"}}'"
            ))
        })?;
    map.into_iter()
        .map(|(name, value)| {
            let serde_json::Value::String(value) = value else {
                return Err(invalid(format!(
                    "header '{name}' must have a string value, got {value}"
                )));
            };
            if name.is_empty() || name.bytes().any(|b| b <= b' ' || b == b':' || b >= 0x7f) {
                return Err(invalid(format!(
                    "'{name}' is not a valid header name: use visible ASCII without ':'"
                )));
            }
            if value.contains(['\r', '\n']) {
                return Err(invalid(format!(
                    "the value of header '{name}' contains a line break"
                )));
            }
            Ok((name, value))
        })
        .collect()
}

#[cfg(test)]
#[path = "options_tests.rs"]
mod tests;
