//! Who the sink is and how it checks the server: the auth options turned into checked
//! [`Credentials`], the TLS options into async-nats `ConnectOptions`, and a refused
//! handshake into what to fix.
//!
//! Files (credentials, seeds, certificates) are read here, when the sink connects, so an
//! error names the option and the path, never the contents. What can be checked without
//! the server is checked first: a seed that is not a user seed, a JWT that does not
//! belong to the seed, a JWT that has expired. The server would refuse all three with the
//! same "authorization violation".

use std::error::Error as StdError;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::rustls::{self, AlertDescription, CertificateError};
use async_nats::{ConnectError, ConnectErrorKind, ConnectOptions};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::{KeyPair, KeyPairType};

use crate::connect::credentials::Credentials;
use crate::error::{NatsSinkError, Result};
use crate::options::config::{Auth, ConnectionConfig, Secret, Seed, Tls};
use crate::options::{
    CREDENTIALS_FILE, JWT, NKEY_SEED, NKEY_SEED_FILE, TLS_CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE,
};

/// The configured credentials, read and checked, and a description of the identity for
/// error messages (no secret in it: user names and public keys only). async-nats gets
/// them through a [`ConnectOnce`](crate::connect::credentials::ConnectOnce).
pub(crate) fn credentials(auth: &Auth) -> Result<(Credentials, String)> {
    Ok(match auth {
        Auth::None => (Credentials::None, "no credentials".into()),
        Auth::UserPassword { user, password } => (
            Credentials::UserPassword {
                user: user.clone(),
                password: password.clone(),
            },
            format!("user '{user}' ('username'/'password')"),
        ),
        Auth::Token(token) => (Credentials::Token(token.clone()), "the 'token'".into()),
        Auth::CredentialsFile(path) => {
            let contents = Secret(read(CREDENTIALS_FILE, path)?);
            let source = format!("'{CREDENTIALS_FILE}' ('{}')", path.display());
            let missing = |what: &str| {
                invalid(
                    CREDENTIALS_FILE,
                    format!("{source} holds no {what}: it is not a NATS credentials file"),
                )
            };
            let jwt = creds_block(&contents.0, "JWT").ok_or_else(|| missing("user JWT"))?;
            let seed = creds_block(&contents.0, "SEED").ok_or_else(|| missing("nkey seed"))?;
            let key_pair = user_key_pair(&Secret(seed.into()), CREDENTIALS_FILE)?;
            let who = check_jwt(jwt, Some(&key_pair), CREDENTIALS_FILE, &source)?;
            (
                Credentials::Jwt {
                    jwt: Secret(jwt.trim().to_string()),
                    key_pair,
                },
                format!("{who} from {source}"),
            )
        }
        Auth::NKey { seed, jwt } => {
            let (seed, option) = match seed {
                Seed::Inline(seed) => (seed.clone(), NKEY_SEED),
                Seed::File(path) => (Secret(read(NKEY_SEED_FILE, path)?), NKEY_SEED_FILE),
            };
            let key_pair = user_key_pair(&seed, option)?;
            match jwt {
                None => {
                    let who = format!("nkey {} ('{option}')", key_pair.public_key());
                    (Credentials::NKey(key_pair), who)
                }
                Some(jwt) => {
                    let who = check_jwt(&jwt.0, Some(&key_pair), JWT, &format!("'{JWT}'"))?;
                    (
                        Credentials::Jwt {
                            jwt: Secret(jwt.0.trim().to_string()),
                            key_pair,
                        },
                        format!("{who} from '{JWT}'"),
                    )
                }
            }
        }
    })
}

/// `options` with the configured TLS settings.
pub(crate) fn tls(mut options: ConnectOptions, tls: &Tls) -> Result<ConnectOptions> {
    if tls.required {
        options = options.require_tls(true);
    }
    if let Some(ca) = &tls.ca_file {
        check_readable(TLS_CA_FILE, ca)?;
        options = options.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &tls.client {
        check_readable(TLS_CERT_FILE, cert)?;
        check_readable(TLS_KEY_FILE, key)?;
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if tls.first {
        options = options.tls_first();
    }
    Ok(options)
}

/// The file's text; the error names the option and path, and why it cannot be read.
fn read(option: &str, path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| cannot_read(option, path, e))
}

/// Opens the file only: async-nats reads certificates itself, and an unreadable one would
/// reach us as a bare I/O error without the option's name.
fn check_readable(option: &str, path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| cannot_read(option, path, e))
}

fn cannot_read(option: &str, path: &Path, e: std::io::Error) -> NatsSinkError {
    invalid(option, format!("cannot read '{}': {e}", path.display()))
}

fn invalid(option: &str, problem: String) -> NatsSinkError {
    NatsSinkError::InvalidOption {
        option: option.into(),
        problem,
    }
}

/// The seed as a user key pair. nkeys' own messages are not shown: they may quote input.
fn user_key_pair(seed: &Secret, option: &str) -> Result<KeyPair> {
    let key_pair = KeyPair::from_seed(seed.0.trim()).map_err(|e| {
        invalid(
            option,
            format!(
                "is not a valid nkey seed ({}); a user seed starts with 'SU'",
                e.kind()
            ),
        )
    })?;
    let kind = key_pair.key_pair_type();
    if kind != KeyPairType::User {
        return Err(invalid(
            option,
            format!(
                "is the seed of a key of type {kind:?} ({}), not of a user; give a user seed (it starts with 'SU')",
                key_pair.public_key()
            ),
        ));
    }
    Ok(key_pair)
}

/// A block of `.creds` text: the first non-empty line after the `-----BEGIN ...-----`
/// banner whose name ends with `what` (`NATS USER JWT`, `USER NKEY SEED`).
fn creds_block<'a>(contents: &'a str, what: &str) -> Option<&'a str> {
    let mut lines = contents.lines().map(str::trim);
    lines.find(|l| {
        l.strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(|name| name.trim_end_matches('-').ends_with(what))
    })?;
    lines.find(|l| !l.is_empty())
}

/// Checks what can be checked of a user JWT without the server, and describes its user.
fn check_jwt(jwt: &str, seed: Option<&KeyPair>, option: &str, source: &str) -> Result<String> {
    let claims = decode_claims(jwt.trim())
        .ok_or_else(|| invalid(option, format!("{source} does not hold a valid JWT")))?;
    let subject = claims["sub"].as_str().unwrap_or_default().to_string();
    let who = match claims["name"].as_str() {
        Some(name) if !name.is_empty() => format!("user '{name}' ({subject})"),
        _ => format!("user {subject}"),
    };
    if let Some(key_pair) = seed
        && key_pair.public_key() != subject
    {
        return Err(invalid(
            option,
            format!(
                "the JWT in {source} is for {who}, but the seed is for {}: give the seed that belongs to the JWT",
                key_pair.public_key()
            ),
        ));
    }
    if let Some(expires) = claims["exp"].as_u64() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        if expires <= now.as_secs() {
            let at = UNIX_EPOCH + Duration::from_secs(expires);
            return Err(invalid(
                option,
                format!(
                    "the JWT of {who} in {source} expired at {}: issue new credentials for the user",
                    humantime::format_rfc3339_seconds(at)
                ),
            ));
        }
    }
    Ok(who)
}

/// The claims of a JWT (`header.claims.signature`, base64url). The signature is the
/// server's to check.
fn decode_claims(jwt: &str) -> Option<serde_json::Value> {
    let claims = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(claims.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// What went wrong in a failed connect, and whether waiting could change it: only "no
/// server answers" can; a refused credential or certificate cannot. Decided from the
/// error's kind and, for TLS, the rustls error inside it, never from message text.
pub(crate) fn explain(
    error: &ConnectError,
    config: &ConnectionConfig,
    who: &str,
) -> (String, bool) {
    if let Some(tls_error) = find_rustls_error(error) {
        return (tls_problem(tls_error, &config.tls), false);
    }
    let timeout = config.connect_timeout;
    match error.kind() {
        ConnectErrorKind::AuthorizationViolation => (auth_problem(&config.auth, who), false),
        ConnectErrorKind::TimedOut => (timed_out(timeout), true),
        ConnectErrorKind::Io => (
            // A TLS-first server that hears no handshake closes the connection before its
            // INFO, which looks the same as a server going away; say so.
            "the server cannot be reached or closed the connection (refused, reset, or no INFO): check the address and that the server is up; a server with TLS 'handshake_first' needs tls_first = 'true'".into(),
            true,
        ),
        ConnectErrorKind::Dns => ("the host name does not resolve: check 'servers'".into(), false),
        ConnectErrorKind::ServerParse => ("invalid server address: check 'servers'".into(), false),
        ConnectErrorKind::Tls => (
            format!(
                "the TLS settings cannot be used: {}",
                error.source().map_or(String::new(), |s| s.to_string())
            ),
            false,
        ),
        ConnectErrorKind::Authentication => (
            format!("signing the server's challenge with the seed of {who} failed"),
            false,
        ),
        ConnectErrorKind::MaxReconnects => {
            ("gave up after the maximum number of reconnects".into(), true)
        }
    }
}

pub(crate) fn timed_out(timeout: Duration) -> String {
    format!(
        "timed out after {timeout:?}: check the address and that the server is up, or raise 'connect_timeout'"
    )
}

fn auth_problem(auth: &Auth, who: &str) -> String {
    let advice = match auth {
        Auth::None => {
            return "the server requires authentication: give 'username' and 'password', 'token', 'credentials_file' or 'nkey_seed'".into();
        }
        Auth::UserPassword { .. } => "check 'username' and 'password'",
        Auth::Token(_) => "check 'token'",
        Auth::CredentialsFile(_) | Auth::NKey { jwt: Some(_), .. } => {
            "the user may have been revoked, or its account is not known to the server (check the operator and account the server trusts)"
        }
        Auth::NKey { jwt: None, .. } => "check that the server's authorization lists this nkey",
    };
    format!("the server rejected {who} (authorization violation): {advice}")
}

/// The rustls error in `error`'s source chain: async-nats reports a failed handshake as an
/// I/O error wrapping it.
fn find_rustls_error<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        // `io::Error::source` skips the error it wraps; `get_ref` returns it.
        if let Some(found) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(found);
        }
        current = e.source();
    }
    None
}

fn tls_problem(error: &rustls::Error, tls: &Tls) -> String {
    let trusted = match &tls.ca_file {
        Some(ca) => format!("the CA in '{TLS_CA_FILE}' ('{}')", ca.display()),
        None => "the system's root CAs (give 'tls_ca_file' for a private CA)".into(),
    };
    let client_cert = match &tls.client {
        Some((cert, _)) => format!("'{TLS_CERT_FILE}' ('{}')", cert.display()),
        None => String::new(),
    };
    match error {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                "TLS: the server's certificate is not signed by {trusted}"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "TLS: the server's certificate does not name the host in 'servers': connect by a name or address the certificate lists".into()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "TLS: the server's certificate has expired".into()
            }
            other => format!("TLS: the server's certificate is not accepted ({other:?})"),
        },
        rustls::Error::AlertReceived(alert) if client_cert.is_empty() && is_client_cert_alert(*alert) => {
            "TLS: the server requires a client certificate: give 'tls_cert_file' and 'tls_key_file'".into()
        }
        rustls::Error::AlertReceived(alert) if is_client_cert_alert(*alert) => format!(
            "TLS: the server refused the client certificate in {client_cert} ({alert:?}): it must be signed by a CA the server trusts and not expired"
        ),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "TLS: the server did not answer with TLS: either it has no TLS configured (then drop the 'tls*' options), or 'tls_first' does not match the server's 'handshake_first' setting".into()
        }
        other => format!("the TLS handshake failed: {other}"),
    }
}

/// Why servers the cluster announced (not configured ones) could not be used, if it was
/// nothing the sink's options can fix: an announced host name that does not resolve
/// here, or TLS (a server serves none, or its certificate does not name the address it
/// was announced under or is not signed by a CA the sink trusts). `None` for any other
/// failure, such as a refused credential. The advice for a configured server (check
/// 'servers', drop the `tls*` options) would be wrong here; the caller retries instead,
/// since the configured servers may come back.
pub(crate) fn announced_refusal(error: &NatsSinkError, tls: &Tls) -> Option<String> {
    let NatsSinkError::Connect {
        source: Some(source),
        ..
    } = error
    else {
        return None;
    };
    if source.kind() == ConnectErrorKind::Dns {
        return Some("a server's announced host name does not resolve here".into());
    }
    Some(match find_rustls_error(source)? {
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => "TLS: a server's certificate does not name the address the cluster announced (its 'client_advertise' should be a name the certificate lists)".into(),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "a server does not answer with TLS, which every connection of this sink requires".into()
        }
        other => tls_problem(other, tls),
    })
}

fn is_client_cert_alert(alert: AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateExpired
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt_with(claims: serde_json::Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("{header}.{claims}.c2ln")
    }

    #[test]
    fn the_jwt_and_seed_are_found_in_creds_text() {
        let creds = "-----BEGIN NATS USER JWT-----\neyJ.abc.def\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\nSUxyz\n------END USER NKEY SEED------\n";
        assert_eq!(creds_block(creds, "JWT"), Some("eyJ.abc.def"));
        assert_eq!(creds_block(creds, "SEED"), Some("SUxyz"));
        assert_eq!(creds_block("just text", "JWT"), None);
    }

    #[test]
    fn an_expired_jwt_is_refused_before_connecting_with_its_user_and_time() {
        let user = KeyPair::new_user();
        let jwt = jwt_with(
            serde_json::json!({"sub": user.public_key(), "name": "alice", "exp": 1_700_000_000}),
        );
        let text = check_jwt(&jwt, Some(&user), JWT, "'jwt'")
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("user 'alice'") && text.contains("expired at 2023-11-14T22:13:20Z"),
            "{text}"
        );
        assert!(!text.contains(&jwt), "{text}");
    }

    #[test]
    fn a_jwt_for_another_user_than_the_seed_is_refused() {
        let (user, other) = (KeyPair::new_user(), KeyPair::new_user());
        let jwt = jwt_with(serde_json::json!({"sub": other.public_key()}));
        let text = check_jwt(&jwt, Some(&user), JWT, "'jwt'")
            .unwrap_err()
            .to_string();
        assert!(
            text.contains(&user.public_key()) && text.contains(&other.public_key()),
            "{text}"
        );
        let unexpired =
            jwt_with(serde_json::json!({"sub": user.public_key(), "exp": 4_000_000_000u64}));
        assert_eq!(
            check_jwt(&unexpired, Some(&user), JWT, "'jwt'").unwrap(),
            format!("user {}", user.public_key())
        );
    }

    #[test]
    fn an_announced_servers_tls_or_dns_failure_is_explained_and_nothing_else() {
        let connect = |source: ConnectError| NatsSinkError::Connect {
            servers: "tls://10.0.0.2:4222".into(),
            problem: "p".into(),
            source: Some(source),
        };
        // async-nats wraps a failed handshake's rustls error in an I/O error.
        let handshake = |tls_error: rustls::Error| {
            let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls_error);
            connect(ConnectError::with_source(ConnectErrorKind::Io, io))
        };
        let tls = Tls::default();
        let misnamed = handshake(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName,
        ));
        let text = announced_refusal(&misnamed, &tls).unwrap();
        assert!(
            text.contains("does not name the address the cluster announced"),
            "{text}"
        );
        let plaintext = handshake(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        ));
        let text = announced_refusal(&plaintext, &tls).unwrap();
        assert!(text.contains("does not answer with TLS"), "{text}");
        let dns = connect(ConnectError::new(ConnectErrorKind::Dns));
        assert!(
            announced_refusal(&dns, &tls)
                .unwrap()
                .contains("does not resolve")
        );

        let refused = connect(ConnectError::new(ConnectErrorKind::AuthorizationViolation));
        assert_eq!(announced_refusal(&refused, &tls), None);
        let unreadable_ca = connect(ConnectError::new(ConnectErrorKind::Tls));
        assert_eq!(announced_refusal(&unreadable_ca, &tls), None);
    }

    #[test]
    fn seeds_must_be_user_seeds_and_are_never_quoted() {
        let account = KeyPair::new_account();
        let seed = Secret(account.seed().unwrap());
        let text = user_key_pair(&seed, NKEY_SEED).unwrap_err().to_string();
        assert!(text.contains("type Account"), "{text}");
        assert!(!text.contains(&seed.0), "{text}");
        let garbage = Secret("SUnot-a-seed-at-all".into());
        let text = user_key_pair(&garbage, NKEY_SEED).unwrap_err().to_string();
        assert!(
            text.contains("not a valid nkey seed") && !text.contains("not-a-seed"),
            "{text}"
        );
        let user = KeyPair::new_user();
        assert!(user_key_pair(&Secret(format!("{}\n", user.seed().unwrap())), NKEY_SEED).is_ok());
    }
}
