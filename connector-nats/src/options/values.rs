//! Option values: the kind of value each option takes, and the parsers for them.
//!
//! Each option declares a [`ValueKind`]; validation at CREATE time and the typed reads in
//! `config` both go through [`ValueKind::check`] and the parsers here, so a value is
//! judged the same way everywhere.

use std::time::Duration;

use crate::error::{NatsSinkError, Result};
use crate::subject;

/// What an option's value must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Any text (names, secrets, columns).
    Text,
    /// A server list: a JSON array or a comma-separated list of URLs.
    Servers,
    /// A positive duration (`'500ms'`, `'5s'`, a bare number of seconds), at most 24h.
    Duration,
    /// A message TTL: whole seconds, at least one (`'90s'`, `'7d'`, `'3600'`), or `'never'`.
    Ttl,
    /// `'true'` or `'false'`.
    Bool,
    /// A whole number within `min..=max`.
    Count { min: u64, max: u64 },
    /// A number of bytes within `min..=max`: `'65536'`, `'64KiB'`, `'64MiB'`, `'1GB'`.
    Bytes { min: u64, max: u64 },
    /// One of a fixed set of words.
    Choice(&'static [&'static str]),
    /// Static headers as a JSON object of strings.
    Headers,
    /// A publish subject (no wildcards).
    Subject,
    /// The start of a subject, ending with `.` so that it covers whole tokens.
    SubjectPrefix,
    /// A path to a file, read when the sink connects.
    File,
}

impl ValueKind {
    /// Checks `value` for option `option`.
    pub fn check(self, option: &str, value: &str) -> Result<()> {
        match self {
            ValueKind::Text => Ok(()),
            ValueKind::Servers => parse_servers(option, value).map(drop),
            ValueKind::Duration => parse_duration(option, value).map(drop),
            ValueKind::Ttl => parse_ttl(value)
                .map(drop)
                .map_err(|problem| invalid(option, problem)),
            ValueKind::Bool => parse_bool(option, value).map(drop),
            ValueKind::Count { min, max } => parse_count(option, value, min, max).map(drop),
            ValueKind::Bytes { min, max } => parse_bytes(option, value, min, max).map(drop),
            ValueKind::Choice(choices) => parse_choice(option, value, choices).map(drop),
            ValueKind::Headers => parse_headers(option, value).map(drop),
            ValueKind::Subject => parse_subject(option, value),
            ValueKind::SubjectPrefix => parse_subject_prefix(option, value),
            ValueKind::File if value.trim().is_empty() => {
                Err(invalid(option, "is empty; give the path of a file".into()))
            }
            ValueKind::File => Ok(()),
        }
    }

    /// How the value is written, for the option reference.
    pub fn describe(self) -> String {
        match self {
            ValueKind::Text => "text".into(),
            ValueKind::Servers => "URL list".into(),
            ValueKind::Duration => "duration".into(),
            ValueKind::Ttl => "duration or `never`".into(),
            ValueKind::Bool => "`true` or `false`".into(),
            ValueKind::Count { min, max } => format!("{min} to {max}"),
            ValueKind::Bytes { min, max } => {
                format!("size, {} to {}", show_bytes(min), show_bytes(max))
            }
            ValueKind::Choice(choices) => choices
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(" or "),
            ValueKind::Headers => "JSON object".into(),
            ValueKind::Subject => "subject".into(),
            ValueKind::SubjectPrefix => "subject prefix ending in `.`".into(),
            ValueKind::File => "file path".into(),
        }
    }
}

fn invalid(option: &str, problem: String) -> NatsSinkError {
    NatsSinkError::InvalidOption {
        option: option.to_string(),
        problem,
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
pub(crate) fn parse_servers(option: &str, value: &str) -> Result<Vec<String>> {
    let trimmed = value.trim();
    let servers: Vec<String> = if trimmed.starts_with('[') {
        serde_json::from_str::<Vec<String>>(trimmed).map_err(|e| {
            invalid(option, format!(
                "not a JSON array of strings ({e}); write '[\"nats://host:4222\"]' or 'nats://host:4222'"
            ))
        })?
    } else {
        trimmed.split(',').map(|s| s.trim().to_string()).collect()
    };
    let servers: Vec<String> = servers.into_iter().filter(|s| !s.is_empty()).collect();
    if servers.is_empty() {
        return Err(invalid(
            option,
            "no server given; write e.g. 'nats://127.0.0.1:4222'".into(),
        ));
    }
    for (i, server) in servers.iter().enumerate() {
        let addr = server.parse::<async_nats::ServerAddr>().map_err(|e| {
            invalid(
                option,
                format!("server {} is not a server address: {e}", i + 1),
            )
        })?;
        // Credentials in a URL would be shown wherever the servers are (EXPLAIN, logs).
        if addr.has_user_pass() || addr.username().is_some() {
            return Err(invalid(
                option,
                format!(
                    "server {} has credentials in its URL: put them in 'username' and 'password' (or 'token') instead",
                    i + 1
                ),
            ));
        }
    }
    Ok(servers)
}

/// The longest duration accepted; a longer one is almost certainly a typo.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

pub(crate) fn parse_duration(option: &str, value: &str) -> Result<Duration> {
    let value = value.trim();
    // A bare number means seconds, as users of other connectors expect.
    let parsed = match value.parse::<f64>() {
        Ok(secs) => Duration::try_from_secs_f64(secs).ok(),
        Err(_) => humantime::parse_duration(value).ok(),
    };
    match parsed {
        Some(d) if d > MAX_DURATION => Err(invalid(
            option,
            format!("'{value}' is longer than the maximum of 24h"),
        )),
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(invalid(
            option,
            format!("'{value}' is not a positive duration; write e.g. '500ms', '5s' or '2m'"),
        )),
    }
}

/// A message's time to live, as the `Nats-TTL` header carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// Removed this many seconds after it is stored.
    Seconds(u64),
    /// Kept whatever the stream's `max_age` says.
    Never,
}

impl Ttl {
    /// The header value: whole seconds, or `never` (the forms nats-server reads).
    pub fn header_value(self) -> String {
        match self {
            Ttl::Seconds(secs) => secs.to_string(),
            Ttl::Never => "never".into(),
        }
    }

    /// A TTL of `secs` seconds, or why it cannot be one.
    pub fn from_seconds(secs: i128) -> std::result::Result<Ttl, String> {
        match u64::try_from(secs) {
            Ok(secs) if (1..=MAX_TTL_SECS).contains(&secs) => Ok(Ttl::Seconds(secs)),
            Ok(0) | Err(_) => Err(format!(
                "{secs} is not a TTL: give at least 1 second (or 'never')"
            )),
            Ok(_) => Err(format!(
                "{secs} seconds is more than a TTL can be ({MAX_TTL_SECS} s, about 292 years; 'never' keeps the message)"
            )),
        }
    }
}

/// The longest TTL nats-server can hold: it keeps TTLs as nanoseconds in an i64.
const MAX_TTL_SECS: u64 = i64::MAX as u64 / 1_000_000_000;

/// A TTL from text: `'never'`, a whole number of seconds, or a duration (`'90s'`, `'1h'`,
/// `'7d'`) of whole seconds. The error is a phrase that follows the value's name.
pub fn parse_ttl(text: &str) -> std::result::Result<Ttl, String> {
    let value = text.trim();
    if value.eq_ignore_ascii_case("never") {
        return Ok(Ttl::Never);
    }
    if let Ok(secs) = value.parse::<i128>() {
        return Ttl::from_seconds(secs);
    }
    let Ok(duration) = humantime::parse_duration(value) else {
        return Err(format!(
            "{} is not a TTL: write a duration such as '90s', '1h' or '7d', a number of seconds, or 'never'",
            subject::shown(text)
        ));
    };
    if duration.subsec_nanos() != 0 {
        return Err(format!(
            "{} is not a TTL: NATS counts TTLs in whole seconds (at least '1s')",
            subject::shown(text)
        ));
    }
    Ttl::from_seconds(i128::from(duration.as_secs()))
}

pub(crate) fn parse_bool(option: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(invalid(
            option,
            format!("'{other}' is not a boolean; write 'true' or 'false'"),
        )),
    }
}

pub(crate) fn parse_count(option: &str, value: &str, min: u64, max: u64) -> Result<u64> {
    match value.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(invalid(
            option,
            format!("'{value}' is not a whole number from {min} to {max}"),
        )),
    }
}

/// A size in bytes: a number with an optional unit, `KiB`/`MiB`/`GiB` counting in
/// 1024s and `KB`/`MB`/`GB` in 1000s (the `parse-size` crate's reading).
pub(crate) fn parse_bytes(option: &str, value: &str, min: u64, max: u64) -> Result<u64> {
    match parse_size::parse_size(value.trim()) {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(n) => Err(invalid(
            option,
            format!(
                "'{value}' is {n} bytes; give a size from {} to {}",
                show_bytes(min),
                show_bytes(max)
            ),
        )),
        Err(e) => Err(invalid(
            option,
            format!("'{value}' is not a size ({e}); write e.g. '64MiB', '512KiB' or '1048576'"),
        )),
    }
}

/// `n` bytes in the largest binary unit that divides it.
pub(crate) fn show_bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    UNITS
        .iter()
        .find(|(unit, _)| n >= *unit && n.is_multiple_of(*unit))
        .map_or_else(
            || n.to_string(),
            |(unit, name)| format!("{}{name}", n / unit),
        )
}

/// The choice `value` names, lowercased; an unknown word lists the valid ones.
pub(crate) fn parse_choice(
    option: &str,
    value: &str,
    choices: &[&'static str],
) -> Result<&'static str> {
    let lower = value.trim().to_ascii_lowercase();
    choices
        .iter()
        .find(|c| **c == lower)
        .copied()
        .ok_or_else(|| {
            invalid(
                option,
                format!(
                    "'{value}' is not supported; write one of: {}",
                    choices.join(", ")
                ),
            )
        })
}

pub(crate) fn parse_subject(option: &str, value: &str) -> Result<()> {
    subject::validate(value).map_err(|problem| {
        invalid(
            option,
            format!("'{value}' is not a valid subject: {problem}"),
        )
    })
}

/// A prefix such as `orders.` or `tenant.a.`: valid subject tokens followed by a `.`, so
/// that `orders.` never matches `ordersX.1`.
pub(crate) fn parse_subject_prefix(option: &str, value: &str) -> Result<()> {
    let Some(tokens) = value.strip_suffix('.') else {
        return Err(invalid(
            option,
            format!(
                "'{value}' must end with '.' so that it covers whole tokens; write e.g. '{value}.'"
            ),
        ));
    };
    subject::validate(tokens).map_err(|problem| {
        invalid(
            option,
            format!("'{value}' is not a valid subject prefix: {problem}"),
        )
    })
}

/// `'{"k": "v", ...}'` into header pairs, checked the way NATS needs them.
pub(crate) fn parse_headers(option: &str, value: &str) -> Result<Vec<(String, String)>> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(value).map_err(|e| {
            invalid(
                option,
                format!("not a JSON object ({e}); write '{{\"name\": \"value\"}}'"),
            )
        })?;
    map.into_iter()
        .map(|(name, value)| {
            let serde_json::Value::String(value) = value else {
                return Err(invalid(
                    option,
                    format!("header '{name}' must have a string value, got {value}"),
                ));
            };
            if let Some(problem) = crate::encode::headers::name_problem(&name) {
                return Err(invalid(
                    option,
                    format!("'{name}' is not a valid header name: it {problem}; use visible ASCII without ':'"),
                ));
            }
            if let Some(problem) = crate::encode::headers::value_problem(&value) {
                return Err(invalid(
                    option,
                    format!("the value of header '{name}' {problem}"),
                ));
            }
            Ok((name, value))
        })
        .collect()
}
