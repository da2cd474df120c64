//! The typed configurations parsed from a validated [`Options`] map: how to connect
//! ([`ConnectionConfig`], built when the sink connects, so `${VAR}`s are read then) and
//! how to route and encode ([`SinkConfig`], built when the sink table is created).
//! Secrets live in [`Secret`], whose `Debug` shows `***`.

use std::fmt;
use std::time::Duration;

use crate::error::{NatsSinkError, Result};
use crate::options::{
    CONFIRM_TIMEOUT, CONNECT_TIMEOUT, FORMAT, HEADERS, Options, PASSWORD, PAYLOAD_INCLUDE_ROUTING,
    REPLY_TO_FIELD, SERVERS, SUBJECT, SUBJECT_FIELD, TOKEN, USERNAME, parse_bool, parse_duration,
    parse_fixed_subject, parse_format, parse_headers, parse_servers, redact_userinfo,
};

/// A secret value: `Debug` shows `***`, and there is no `Display`.
#[derive(Clone)]
pub(crate) struct Secret(pub(crate) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How to authenticate.
#[derive(Debug, Clone)]
pub(crate) enum Auth {
    None,
    UserPassword { user: String, password: Secret },
    Token(Secret),
}

/// Everything needed to connect, with `${VAR}` resolved. Built when the sink connects.
#[derive(Clone)]
pub(crate) struct ConnectionConfig {
    pub servers: Vec<String>,
    pub auth: Auth,
    pub connect_timeout: Duration,
}

impl ConnectionConfig {
    pub(crate) fn from_options(options: &Options) -> Result<Self> {
        let servers = parse_servers(&options.resolved(SERVERS)?.unwrap_or_default())?;
        let auth = match (
            options.resolved(USERNAME)?,
            options.resolved(PASSWORD)?,
            options.resolved(TOKEN)?,
        ) {
            (Some(user), Some(password), None) => Auth::UserPassword {
                user,
                password: Secret(password),
            },
            (None, None, Some(token)) => Auth::Token(Secret(token)),
            _ => Auth::None,
        };
        let connect_timeout = parse_duration(
            CONNECT_TIMEOUT,
            &options.resolved(CONNECT_TIMEOUT)?.unwrap_or_default(),
        )?;
        Ok(ConnectionConfig {
            servers,
            auth,
            connect_timeout,
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
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// Where each row's subject comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectSpec {
    Fixed(String),
    Column(String),
}

/// The sink's routing and payload settings, with `${VAR}` resolved. Built at table creation.
#[derive(Debug, Clone)]
pub(crate) struct SinkConfig {
    pub subject: SubjectSpec,
    pub reply_to_field: Option<String>,
    pub headers: Vec<(String, String)>,
    pub payload_include_routing: bool,
    pub confirm_timeout: Duration,
}

impl SinkConfig {
    pub(crate) fn from_options(options: &Options) -> Result<Self> {
        let subject = match (options.resolved(SUBJECT)?, options.resolved(SUBJECT_FIELD)?) {
            (Some(fixed), None) => {
                parse_fixed_subject(&fixed)?;
                SubjectSpec::Fixed(fixed)
            }
            (None, Some(column)) => SubjectSpec::Column(column),
            (Some(_), Some(_)) => {
                return Err(NatsSinkError::InvalidOption {
                    option: SUBJECT.into(),
                    problem:
                        "give either 'subject' (fixed) or 'subject_field' (a column), not both"
                            .into(),
                });
            }
            (None, None) => {
                return Err(NatsSinkError::InvalidOption {
                    option: SUBJECT_FIELD.into(),
                    problem: "missing: give 'subject_field' (the column holding each row's subject) or a fixed 'subject'".into(),
                });
            }
        };
        parse_format(&options.resolved(FORMAT)?.unwrap_or_default())?;
        Ok(SinkConfig {
            subject,
            reply_to_field: options.resolved(REPLY_TO_FIELD)?,
            headers: match options.resolved(HEADERS)? {
                Some(h) => parse_headers(&h)?,
                None => Vec::new(),
            },
            payload_include_routing: parse_bool(
                PAYLOAD_INCLUDE_ROUTING,
                &options
                    .resolved(PAYLOAD_INCLUDE_ROUTING)?
                    .unwrap_or_default(),
            )?,
            confirm_timeout: parse_duration(
                CONFIRM_TIMEOUT,
                &options.resolved(CONFIRM_TIMEOUT)?.unwrap_or_default(),
            )?,
        })
    }
}
