//! What a client presents in its CONNECT, and a gate that lets it connect only once.
//!
//! async-nats keeps a client's command queue across its own reconnects: publishes queued
//! when a connection drops are written to the next connection, ahead of the rows the sink
//! resends because they were lost with the old one, and per-subject order breaks. So a
//! client here never reconnects by itself. Its credentials are handed over through
//! `with_auth_callback`, and once the first connect has succeeded ([`ConnectOnce::connected`])
//! the callback refuses: every later attempt fails in the client, before it sends CONNECT,
//! and the client gives up after `max_reconnects`, dropping what it still held. The sink
//! notices the lost connection and opens a fresh client (see `connection`).
//!
//! The callback replaces async-nats's own credential handling, so it builds the same
//! CONNECT fields that `ConnectOptions::user_and_password`, `token`, `nkey` and `jwt`
//! would (async-nats `connector.rs`): for an nkey the public key and the seed's ed25519
//! signature of the server's nonce; for a JWT the JWT and that signature. async-nats
//! base64url-encodes (no padding) the signature for the wire in both paths.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_nats::{Auth, AuthError, ConnectOptions};
use nkeys::KeyPair;

use crate::options::config::Secret;

/// Credentials loaded and checked (see `security`); no `Debug`, they are secret.
pub(crate) enum Credentials {
    None,
    UserPassword {
        user: String,
        password: Secret,
    },
    Token(Secret),
    /// nkey authentication: the server knows the public key.
    NKey(KeyPair),
    /// A user JWT, proven by signing the nonce with the user's key.
    Jwt {
        jwt: Secret,
        key_pair: KeyPair,
    },
}

impl Credentials {
    /// The CONNECT's credential fields for a server that sent `nonce`.
    fn auth(&self, nonce: &[u8]) -> Result<Auth, AuthError> {
        let mut auth = Auth::new();
        match self {
            Credentials::None => {}
            Credentials::UserPassword { user, password } => {
                auth.username = Some(user.clone());
                auth.password = Some(password.0.clone());
            }
            Credentials::Token(token) => auth.token = Some(token.0.clone()),
            Credentials::NKey(key_pair) => {
                auth.nkey = Some(key_pair.public_key());
                auth.signature = Some(key_pair.sign(nonce).map_err(AuthError::new)?);
            }
            Credentials::Jwt { jwt, key_pair } => {
                auth.jwt = Some(jwt.0.clone());
                auth.signature = Some(key_pair.sign(nonce).map_err(AuthError::new)?);
            }
        }
        Ok(auth)
    }
}

/// Lets one client authenticate until its first connect succeeds, and never after.
#[derive(Clone)]
pub(crate) struct ConnectOnce {
    credentials: Arc<Credentials>,
    closed: Arc<AtomicBool>,
}

/// Why a client's reconnect is refused (async-nats logs it at its own `error` level).
const REFUSED: &str = "nats_sink: this client connects only once; after a disconnect the sink opens a new connection and resends, in order, what was not confirmed";

impl ConnectOnce {
    pub(crate) fn new(credentials: Credentials) -> Self {
        ConnectOnce {
            credentials: Arc::new(credentials),
            closed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Options whose every connect attempt asks this gate for the credentials.
    pub(crate) fn options(&self) -> ConnectOptions {
        let gate = self.clone();
        ConnectOptions::with_auth_callback(move |nonce| std::future::ready(gate.admit(&nonce)))
    }

    /// Called once the client is connected: from now on its attempts are refused.
    pub(crate) fn connected(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    fn admit(&self, nonce: &[u8]) -> Result<Auth, AuthError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(AuthError::new(REFUSED));
        }
        self.credentials.auth(nonce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nkeys_and_jwts_sign_the_nonce_with_the_users_key() {
        let user = KeyPair::new_user();
        let public = user.public_key();
        let seed = user.seed().unwrap();
        let nonce = b"a-nonce-from-the-server";

        let auth = Credentials::NKey(KeyPair::from_seed(&seed).unwrap())
            .auth(nonce)
            .unwrap();
        assert_eq!(auth.nkey.as_deref(), Some(public.as_str()));
        assert!(auth.jwt.is_none() && auth.username.is_none());
        user.verify(nonce, &auth.signature.unwrap()).unwrap();

        let jwt = Credentials::Jwt {
            jwt: Secret("header.claims.sig".into()),
            key_pair: KeyPair::from_seed(&seed).unwrap(),
        };
        let auth = jwt.auth(nonce).unwrap();
        assert_eq!(auth.jwt.as_deref(), Some("header.claims.sig"));
        assert!(auth.nkey.is_none());
        user.verify(nonce, &auth.signature.unwrap()).unwrap();
    }

    #[test]
    fn the_gate_admits_until_the_first_connect_only() {
        let gate = ConnectOnce::new(Credentials::UserPassword {
            user: "u".into(),
            password: Secret("p".into()),
        });
        let auth = gate.admit(b"n").unwrap();
        assert_eq!(
            (auth.username.as_deref(), auth.password.as_deref()),
            (Some("u"), Some("p"))
        );
        // Every attempt before the first connect is admitted (the server list is tried
        // in turn); a clone shares the gate, as the callback's copy does.
        assert!(gate.admit(b"n").is_ok());
        gate.clone().connected();
        let refused = gate.admit(b"n").err().expect("refused").to_string();
        assert!(refused.contains("connects only once"), "{refused}");

        let token = ConnectOnce::new(Credentials::Token(Secret("t".into())));
        assert_eq!(token.admit(b"n").unwrap().token.as_deref(), Some("t"));
    }
}
