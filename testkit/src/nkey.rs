//! NKey users: a key pair per user, of which the server config lists only the public
//! key; the client proves it holds the seed by signing the server's nonce.

use std::fmt;

use nkeys::KeyPair;

/// A user key pair for nkey authentication (`ServerBuilder::nkey_user`,
/// `ConnectOptions::with_nkey`). Debug output shows the public key only.
#[derive(Clone)]
pub struct UserNkey {
    public: String,
    seed: String,
}

impl UserNkey {
    /// The public key (`U...`), what the server config lists.
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// The seed (`SU...`), the secret a client signs the server's nonce with.
    pub fn seed(&self) -> &str {
        &self.seed
    }
}

impl fmt::Debug for UserNkey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserNkey {{ public: {:?} }}", self.public)
    }
}

/// Generates a fresh user key pair.
pub fn new_user_nkey() -> UserNkey {
    let pair = KeyPair::new_user();
    UserNkey {
        public: pair.public_key(),
        seed: seed_of(&pair),
    }
}

pub(crate) fn seed_of(pair: &KeyPair) -> String {
    pair.seed().expect("a generated key pair has a seed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_nkey_is_a_user_key_pair_whose_debug_output_hides_the_seed() {
        let nkey = new_user_nkey();
        assert!(nkey.seed().starts_with("SU") && nkey.public_key().starts_with('U'));
        let signer = KeyPair::from_seed(nkey.seed()).unwrap();
        assert_eq!(signer.public_key(), nkey.public_key());
        assert!(!format!("{nkey:?}").contains(nkey.seed()));
    }
}
