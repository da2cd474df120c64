//! Signed JWTs and `.creds` files as nats-io/jwt v2 and `nsc` write them.
//!
//! A JWT is `base64url(header).base64url(claims).base64url(signature)`, all base64url
//! without padding; the header is `{"typ":"JWT","alg":"ed25519-nkey"}` and the
//! signature is the issuer nkey's ed25519 signature of the first two parts.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;
use serde_json::{Map, Value, json};

/// A user issued by [`JwtAuth`](crate::JwtAuth): its JWT, its seed and a `.creds` file holding both.
/// Debug output leaves out the seed.
#[derive(Clone)]
pub struct JwtUser {
    pub(crate) name: String,
    pub(crate) public: String,
    pub(crate) jwt: String,
    pub(crate) seed: String,
    pub(crate) creds_file: PathBuf,
}

impl JwtUser {
    /// The name given when the user was issued (the JWT's `name` claim).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The user's public key (`U...`), the JWT's subject.
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// The signed user JWT, for `ConnectOptions::jwt`.
    pub fn jwt(&self) -> &str {
        &self.jwt
    }

    /// The user's seed (`SU...`), which signs the server's nonce.
    pub fn seed(&self) -> &str {
        &self.seed
    }

    /// The `.creds` file (JWT and seed), for `ConnectOptions::credentials_file`.
    pub fn creds_file(&self) -> &Path {
        &self.creds_file
    }

    /// The `.creds` file's content, for `ConnectOptions::credentials`.
    pub fn creds(&self) -> String {
        creds_text(&self.jwt, &self.seed)
    }
}

impl fmt::Debug for JwtUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtUser")
            .field("name", &self.name)
            .field("public", &self.public)
            .field("creds_file", &self.creds_file)
            .finish_non_exhaustive()
    }
}

/// Signs a JWT about `subject` (a public key) with `issuer`'s key; `nats` is the
/// type-specific `nats` claim.
pub(crate) fn encode(
    issuer: &KeyPair,
    subject: &str,
    name: &str,
    (issued, expires): (i64, Option<i64>),
    nats: Value,
) -> String {
    // The fields of nats-io/jwt's ClaimsData, in Go's field order (which is also
    // alphabetical, so a sorted map gives the same JSON).
    let mut claims = Map::new();
    if let Some(exp) = expires {
        claims.insert("exp".into(), json!(exp));
    }
    claims.insert("iat".into(), json!(issued));
    claims.insert("iss".into(), json!(issuer.public_key()));
    claims.insert("name".into(), json!(name));
    claims.insert("sub".into(), json!(subject));
    // nats-io/jwt sets `jti` to the base32 SHA-512/256 of those fields' JSON.
    // nats-server does not check it, but tools that display JWTs show it.
    let common = serde_json::to_vec(&claims).expect("claims serialize");
    let digest = ring::digest::digest(&ring::digest::SHA512_256, &common);
    claims.insert(
        "jti".into(),
        json!(data_encoding::BASE32_NOPAD.encode(digest.as_ref())),
    );
    claims.insert("nats".into(), nats);

    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let payload =
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&Value::Object(claims)).expect("serializes"));
    let signed = format!("{header}.{payload}");
    let signature = issuer
        .sign(signed.as_bytes())
        .expect("a key pair with a seed can sign");
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// The standard `.creds` layout that `nsc` writes and async-nats parses.
pub(crate) fn creds_text(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// Now, in the unix seconds JWTs count in.
pub(crate) fn now() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since_epoch.as_secs()).expect("seconds fit in i64")
}

/// The claims of a JWT, after checking its header and its signature by `issuer`.
#[cfg(test)]
pub(crate) fn verified_claims(jwt: &str, issuer: &str) -> Value {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "{jwt}");
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header, json!({"typ": "JWT", "alg": "ed25519-nkey"}));
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    let signed = format!("{}.{}", parts[0], parts[1]);
    KeyPair::from_public_key(issuer)
        .unwrap()
        .verify(signed.as_bytes(), &signature)
        .expect("signed by the issuer");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwt_carries_the_common_claims_a_jti_and_the_issuers_signature() {
        let (issuer, subject) = (KeyPair::new_account(), KeyPair::new_user());
        let jwt = encode(
            &issuer,
            &subject.public_key(),
            "u",
            (100, Some(200)),
            json!({"type": "user", "version": 2}),
        );
        let claims = verified_claims(&jwt, &issuer.public_key());
        assert_eq!(claims["iss"], issuer.public_key());
        assert_eq!(claims["sub"], subject.public_key());
        assert_eq!(
            (claims["iat"].as_i64(), claims["exp"].as_i64()),
            (Some(100), Some(200))
        );
        assert_eq!(claims["nats"]["type"], "user");
        // Base32 of 32 bytes, without padding.
        assert_eq!(claims["jti"].as_str().unwrap().len(), 52, "{claims}");
    }

    #[test]
    fn a_creds_file_has_the_jwt_and_seed_blocks_async_nats_parses() {
        let text = creds_text("eyJhbGc.eyJzdWI.c2ln", "SUAEXAMPLE");
        assert!(text.starts_with(
            "-----BEGIN NATS USER JWT-----\neyJhbGc.eyJzdWI.c2ln\n------END NATS USER JWT------\n"
        ));
        assert!(text.contains(
            "-----BEGIN USER NKEY SEED-----\nSUAEXAMPLE\n------END USER NKEY SEED------\n"
        ));
    }
}
