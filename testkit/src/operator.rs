//! Decentralized (operator mode) JWT authentication, generated inside a test: no
//! `nsc`, no checked-in keys.
//!
//! In operator mode nats-server trusts an operator; the operator signs account JWTs,
//! an account signs user JWTs, and a client proves it owns the user's key by signing
//! the server's nonce with the user's seed. [`JwtAuth`] plays operator and account;
//! [`ServerBuilder::operator`](crate::ServerBuilder::operator) writes the matching
//! server config (`operator`, `system_account`, `resolver: MEMORY`, `resolver_preload`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nkeys::KeyPair;
use serde_json::{Map, Value, json};
use tempfile::TempDir;

use crate::builder::{quote, quote_path};
use crate::jwt::{JwtUser, creds_text, encode, now};
use crate::nkey::seed_of;

/// An operator with a system account and one application account (named `APP`, with
/// unlimited JetStream), which issues users on demand.
///
/// `.creds` files live in a temporary directory that is removed when the JwtAuth and
/// every server configured with it are dropped: keep the JwtAuth alive while using
/// its paths.
///
/// Users to be *revoked* must be created before the JwtAuth is handed to
/// [`ServerBuilder::operator`](crate::ServerBuilder::operator): revocations live in the
/// account JWT, which the server reads from its config at startup.
///
/// ```no_run
/// # async fn demo() {
/// use nats_testkit::{JwtAuth, NatsServer};
///
/// let mut auth = JwtAuth::new();
/// let revoked = auth.revoked_user_creds("mallory"); // before the server starts
/// let server = NatsServer::builder().operator(&auth).start();
/// let client = async_nats::ConnectOptions::new()
///     .credentials_file(auth.user_creds("alice"))
///     .await
///     .unwrap()
///     .connect(server.url())
///     .await
///     .unwrap();
/// # }
/// ```
pub struct JwtAuth {
    dir: Arc<TempDir>,
    operator: KeyPair,
    system: KeyPair,
    account: KeyPair,
    /// User public key to the time it was revoked (unix seconds): user JWTs issued at
    /// or before that time are refused.
    revocations: BTreeMap<String, i64>,
    /// Set once a server config holds the account JWT; revoking after that would not
    /// reach the server.
    in_server_config: AtomicBool,
    files_written: AtomicUsize,
}

// Public keys only: the key pairs' Debug would not show seeds either, but says less.
impl fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuth")
            .field("dir", &self.dir.path())
            .field("operator", &self.operator.public_key())
            .field("account", &self.account.public_key())
            .field("revoked", &self.revocations.keys())
            .finish()
    }
}

impl Default for JwtAuth {
    fn default() -> Self {
        JwtAuth::new()
    }
}

impl JwtAuth {
    /// Creates the operator, the system account and the `APP` account.
    ///
    /// # Panics
    /// If the temporary directory cannot be created.
    pub fn new() -> JwtAuth {
        let dir = tempfile::Builder::new()
            .prefix("nats-testkit-jwt-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
        JwtAuth {
            dir: Arc::new(dir),
            operator: KeyPair::new_operator(),
            system: KeyPair::new_account(),
            account: KeyPair::new_account(),
            revocations: BTreeMap::new(),
            in_server_config: AtomicBool::new(false),
            files_written: AtomicUsize::new(0),
        }
    }

    /// The operator's public key (`O...`).
    pub fn operator_public_key(&self) -> String {
        self.operator.public_key()
    }

    /// The `APP` account's public key (`A...`), the account every user belongs to.
    pub fn account_public_key(&self) -> String {
        self.account.public_key()
    }

    /// The system account's public key (`A...`).
    pub fn system_account_public_key(&self) -> String {
        self.system.public_key()
    }

    /// The operator JWT (self-signed, names the system account).
    pub fn operator_jwt(&self) -> String {
        let nats = json!({
            "system_account": self.system.public_key(),
            "type": "operator",
            "version": 2,
        });
        let operator = self.operator.public_key();
        encode(
            &self.operator,
            &operator,
            "testkit-operator",
            (now(), None),
            nats,
        )
    }

    /// The `APP` account JWT as it stands now: unlimited, JetStream enabled, with the
    /// revocations made so far.
    pub fn account_jwt(&self) -> String {
        let mut limits = unlimited_account();
        // JetStream is on for an account when a storage limit is non-zero; -1 is
        // "unlimited" for each of these.
        for key in ["mem_storage", "disk_storage", "streams", "consumer"] {
            limits.insert(key.into(), json!(-1));
        }
        let mut nats = json!({
            "limits": limits,
            "default_permissions": { "pub": {}, "sub": {} },
            "type": "account",
            "version": 2,
        });
        if !self.revocations.is_empty() {
            nats["revocations"] = json!(self.revocations);
        }
        let account = self.account.public_key();
        encode(&self.operator, &account, "APP", (now(), None), nats)
    }

    fn system_account_jwt(&self) -> String {
        let nats = json!({ "limits": unlimited_account(), "type": "account", "version": 2 });
        let system = self.system.public_key();
        encode(&self.operator, &system, "SYS", (now(), None), nats)
    }

    /// Issues a user of the `APP` account that may publish and subscribe anywhere.
    pub fn user(&self, name: &str) -> JwtUser {
        self.issue(name, (now(), None))
    }

    /// Issues a user whose JWT expired a minute ago: the server refuses it.
    pub fn expired_user(&self, name: &str) -> JwtUser {
        // Issued an hour before it expired, as a real expired JWT would have been.
        let expired = now() - 60;
        self.issue(name, (expired - 3600, Some(expired)))
    }

    /// Issues a user and revokes it in the account JWT: the server refuses it.
    ///
    /// # Panics
    /// If this JwtAuth was already given to
    /// [`ServerBuilder::operator`](crate::ServerBuilder::operator): that server's
    /// config holds the account JWT without this revocation.
    pub fn revoked_user(&mut self, name: &str) -> JwtUser {
        assert!(
            !self.in_server_config.load(Ordering::Relaxed),
            "revoke users before passing the JwtAuth to ServerBuilder::operator: the \
             server reads the account JWT, and with it the revocations, from its config"
        );
        let issued = now();
        let user = self.issue(name, (issued, None));
        // Revoked means "issued at or before this time".
        self.revocations.insert(user.public.clone(), issued);
        user
    }

    /// [`user`](Self::user)`(name)`'s `.creds` file.
    pub fn user_creds(&self, name: &str) -> PathBuf {
        self.user(name).creds_file
    }

    /// [`expired_user`](Self::expired_user)`(name)`'s `.creds` file.
    pub fn expired_user_creds(&self, name: &str) -> PathBuf {
        self.expired_user(name).creds_file
    }

    /// [`revoked_user`](Self::revoked_user)`(name)`'s `.creds` file.
    ///
    /// # Panics
    /// As `revoked_user`.
    pub fn revoked_user_creds(&mut self, name: &str) -> PathBuf {
        self.revoked_user(name).creds_file
    }

    /// `valid` is the JWT's issue time and expiry (unix seconds).
    fn issue(&self, name: &str, valid: (i64, Option<i64>)) -> JwtUser {
        let pair = KeyPair::new_user();
        let nats = json!({
            "pub": {},
            "sub": {},
            "subs": -1,
            "data": -1,
            "payload": -1,
            "type": "user",
            "version": 2,
        });
        let public = pair.public_key();
        let jwt = encode(&self.account, &public, name, valid, nats);
        let seed = seed_of(&pair);
        let creds_file = self.write_file(name, "creds", &creds_text(&jwt, &seed));
        JwtUser {
            name: name.to_string(),
            public,
            jwt,
            seed,
            creds_file,
        }
    }

    /// Writes a file into the directory under a fresh name derived from `name`, so
    /// two users of the same name do not share a file.
    fn write_file(&self, name: &str, extension: &str, content: &str) -> PathBuf {
        let n = self.files_written.fetch_add(1, Ordering::Relaxed);
        let safe: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let path = self.dir.path().join(format!("{n}-{safe}.{extension}"));
        std::fs::write(&path, content)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// What a server config needs; from now on the account JWT may not change.
    pub(crate) fn server_config(&self) -> OperatorConfig {
        self.in_server_config.store(true, Ordering::Relaxed);
        OperatorConfig {
            operator_jwt: self.write_file("operator", "jwt", &self.operator_jwt()),
            dir: Arc::clone(&self.dir),
            system_account: self.system.public_key(),
            preload: vec![
                (self.system.public_key(), self.system_account_jwt()),
                (self.account.public_key(), self.account_jwt()),
            ],
        }
    }
}

/// The operator-mode part of a server config. Holds the directory with the operator
/// JWT, so the file lives as long as a server that may restart with it.
#[derive(Clone)]
pub(crate) struct OperatorConfig {
    dir: Arc<TempDir>,
    operator_jwt: PathBuf,
    system_account: String,
    /// Account public key and JWT, for `resolver_preload`.
    preload: Vec<(String, String)>,
}

impl fmt::Debug for OperatorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let accounts: Vec<&str> = self.preload.iter().map(|(key, _)| key.as_str()).collect();
        f.debug_struct("OperatorConfig")
            .field("dir", &self.dir.path())
            .field("accounts", &accounts)
            .finish_non_exhaustive()
    }
}

impl OperatorConfig {
    /// `resolver: MEMORY` serves exactly the preloaded accounts and needs no directory
    /// or account server; a user of any other account is refused. The system account
    /// is named so nats-server does not warn about a missing one.
    pub(crate) fn render(&self) -> String {
        let mut conf = format!(
            "operator: {}\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n",
            quote_path(&self.operator_jwt),
            quote(&self.system_account),
        );
        for (account, jwt) in &self.preload {
            conf += &format!("  {account}: {}\n", quote(jwt));
        }
        conf += "}\n";
        conf
    }
}

/// Account limits without JetStream: -1 is "unlimited".
fn unlimited_account() -> Map<String, Value> {
    let limits = json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
    });
    match limits {
        Value::Object(map) => map,
        _ => unreachable!("a JSON object literal"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::verified_claims;

    #[test]
    fn the_chain_of_trust_runs_operator_account_user() {
        let auth = JwtAuth::new();
        let operator = auth.operator_public_key();
        let account = auth.account_public_key();

        let op = verified_claims(&auth.operator_jwt(), &operator);
        assert_eq!(op["iss"], operator);
        assert_eq!(op["sub"], operator);
        assert_eq!(
            op["nats"]["system_account"],
            auth.system_account_public_key()
        );

        let acc = verified_claims(&auth.account_jwt(), &operator);
        assert_eq!(acc["sub"], account);
        assert_eq!(acc["nats"]["type"], "account");
        assert_eq!(acc["nats"]["limits"]["disk_storage"], -1);

        let user = auth.user("alice");
        let claims = verified_claims(user.jwt(), &account);
        assert_eq!(claims["sub"], user.public_key());
        assert_eq!(claims["name"], "alice");
        assert_eq!(claims["nats"]["subs"], -1);
        assert!(claims.get("exp").is_none(), "{claims}");
    }

    #[test]
    fn each_user_gets_its_own_creds_file() {
        let auth = JwtAuth::new();
        let user = auth.user("bob");
        let text = std::fs::read_to_string(user.creds_file()).unwrap();
        assert_eq!(text, user.creds());
        assert!(text.contains(user.jwt()) && text.contains(user.seed()));
        assert_ne!(auth.user_creds("bob"), user.creds_file());
    }

    #[test]
    fn expired_and_revoked_users_are_marked_in_their_jwts() {
        let mut auth = JwtAuth::new();
        let expired = auth.expired_user("old");
        let claims = verified_claims(expired.jwt(), &auth.account_public_key());
        let exp = claims["exp"].as_i64().unwrap();
        assert!(
            exp < now() && claims["iat"].as_i64().unwrap() < exp,
            "{claims}"
        );

        let revoked = auth.revoked_user("gone");
        let acc = verified_claims(&auth.account_jwt(), &auth.operator_public_key());
        let when = acc["nats"]["revocations"][revoked.public_key()].as_i64();
        let issued = verified_claims(revoked.jwt(), &auth.account_public_key())["iat"].as_i64();
        assert!(when.is_some() && when >= issued, "{acc}");
    }

    #[test]
    #[should_panic(expected = "revoke users before")]
    fn revoking_after_the_config_was_written_is_refused() {
        let mut auth = JwtAuth::new();
        let _config = auth.server_config();
        auth.revoked_user("late");
    }

    #[test]
    fn debug_output_hides_every_seed() {
        let mut auth = JwtAuth::new();
        let user = auth.revoked_user("carol");
        let shown = format!("{auth:?} {user:?} {:?}", auth.server_config());
        assert!(shown.contains(user.public_key()), "{shown}");
        for secret in [&auth.operator, &auth.system, &auth.account].map(seed_of) {
            assert!(!shown.contains(&secret), "{shown}");
        }
        assert!(!shown.contains(user.seed()), "{shown}");
    }
}
