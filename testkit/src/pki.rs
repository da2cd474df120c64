//! `Pki`: certificates for TLS tests, generated per test into a temporary directory.
//!
//! Generated rather than checked in, so that no private key lives in the repository and
//! no fixture expires on a future date. Everything is PEM, the format both nats-server
//! (`cert_file`, `key_file`, `ca_file`) and async-nats (`add_root_certificates`,
//! `add_client_certificate`) read.
//!
//! Two unrelated authorities exist so that "wrong CA" failures can be provoked from
//! either side: a client that trusts [`Pki::other_ca_file`] rejects the server, and a
//! client presenting [`Pki::untrusted_client_cert_file`] is rejected by a server that
//! verifies clients.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;

/// The names the server certificate is valid for: the IP a testkit server listens on and
/// the host name a test might use instead. Both kinds matter: a URL with an IP makes
/// rustls check an IP SAN, a URL with a name a DNS SAN.
pub const SERVER_NAMES: [&str; 2] = ["127.0.0.1", "localhost"];

/// The only name [`Pki::misnamed_server_cert_file`] is valid for: neither the IP nor the
/// host name a testkit server is reached by, so a client rejects that certificate by
/// name, not by issuer.
pub const MISNAMED_SERVER_NAME: &str = "misnamed.invalid";

/// A certificate authority with a server and a client certificate, and a second,
/// unrelated authority with a client certificate of its own. Cheap to clone: clones
/// share one directory, which is removed when the last clone (including the one a
/// [`ServerBuilder::tls`](crate::ServerBuilder::tls) keeps) is dropped.
///
/// ```no_run
/// # async fn demo() {
/// use nats_testkit::{NatsServer, Pki};
///
/// let pki = Pki::new();
/// let server = NatsServer::builder().tls(&pki).start();
/// let client = async_nats::ConnectOptions::new()
///     .add_root_certificates(pki.ca_file())
///     .require_tls(true)
///     .connect(server.url())
///     .await
///     .unwrap();
/// # }
/// ```
#[derive(Clone)]
pub struct Pki {
    dir: Arc<TempDir>,
}

// Paths only: they lead to private keys, but are no secret themselves.
impl fmt::Debug for Pki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pki").field("dir", &self.dir()).finish()
    }
}

impl Pki {
    /// Generates both authorities and all certificates (ECDSA P-256; a few
    /// milliseconds).
    ///
    /// # Panics
    /// If the temporary directory cannot be created or written.
    pub fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("nats-testkit-pki-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        };

        let (ca, ca_pem) = authority("nats-testkit CA");
        write(CA, ca_pem);
        let server = leaf("nats-testkit server", &SERVER_NAMES, Role::Server, &ca);
        write(SERVER_CERT, server.cert);
        write(SERVER_KEY, server.key);
        let misnamed = leaf(
            "nats-testkit misnamed server",
            &[MISNAMED_SERVER_NAME],
            Role::Server,
            &ca,
        );
        write(MISNAMED_SERVER_CERT, misnamed.cert);
        write(MISNAMED_SERVER_KEY, misnamed.key);
        let client = leaf("nats-testkit client", &[], Role::Client, &ca);
        write(CLIENT_CERT, client.cert);
        write(CLIENT_KEY, client.key);

        let (other, other_pem) = authority("nats-testkit other CA");
        write(OTHER_CA, other_pem);
        let untrusted = leaf("nats-testkit untrusted client", &[], Role::Client, &other);
        write(UNTRUSTED_CLIENT_CERT, untrusted.cert);
        write(UNTRUSTED_CLIENT_KEY, untrusted.key);

        Pki { dir: Arc::new(dir) }
    }

    /// The directory holding all files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA certificate that signed the server and client certificates; what a client
    /// passes to `add_root_certificates` and a server uses to verify client certificates.
    pub fn ca_file(&self) -> PathBuf {
        self.path(CA)
    }

    /// The server certificate, valid for [`SERVER_NAMES`].
    pub fn server_cert_file(&self) -> PathBuf {
        self.path(SERVER_CERT)
    }

    /// The server certificate's private key.
    pub fn server_key_file(&self) -> PathBuf {
        self.path(SERVER_KEY)
    }

    /// A server certificate signed by [`ca_file`](Self::ca_file) but valid only for
    /// [`MISNAMED_SERVER_NAME`]: a client that trusts the CA and connects by
    /// `127.0.0.1` or `localhost` rejects it (rustls: `NotValidForName`).
    pub fn misnamed_server_cert_file(&self) -> PathBuf {
        self.path(MISNAMED_SERVER_CERT)
    }

    /// The private key of [`misnamed_server_cert_file`](Self::misnamed_server_cert_file).
    pub fn misnamed_server_key_file(&self) -> PathBuf {
        self.path(MISNAMED_SERVER_KEY)
    }

    /// A client certificate signed by [`ca_file`](Self::ca_file), for mutual TLS.
    pub fn client_cert_file(&self) -> PathBuf {
        self.path(CLIENT_CERT)
    }

    /// The private key of [`client_cert_file`](Self::client_cert_file).
    pub fn client_key_file(&self) -> PathBuf {
        self.path(CLIENT_KEY)
    }

    /// A CA that signed nothing the server presents: a client trusting only this one
    /// must reject the server.
    pub fn other_ca_file(&self) -> PathBuf {
        self.path(OTHER_CA)
    }

    /// A client certificate signed by [`other_ca_file`](Self::other_ca_file): a
    /// server verifying clients must reject it.
    pub fn untrusted_client_cert_file(&self) -> PathBuf {
        self.path(UNTRUSTED_CLIENT_CERT)
    }

    /// The private key of [`untrusted_client_cert_file`](Self::untrusted_client_cert_file).
    pub fn untrusted_client_key_file(&self) -> PathBuf {
        self.path(UNTRUSTED_CLIENT_KEY)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

const CA: &str = "ca.pem";
const SERVER_CERT: &str = "server-cert.pem";
const SERVER_KEY: &str = "server-key.pem";
const MISNAMED_SERVER_CERT: &str = "misnamed-server-cert.pem";
const MISNAMED_SERVER_KEY: &str = "misnamed-server-key.pem";
const CLIENT_CERT: &str = "client-cert.pem";
const CLIENT_KEY: &str = "client-key.pem";
const OTHER_CA: &str = "other-ca.pem";
const UNTRUSTED_CLIENT_CERT: &str = "untrusted-client-cert.pem";
const UNTRUSTED_CLIENT_KEY: &str = "untrusted-client-key.pem";

/// Which side of a connection a leaf certificate is for. Go's TLS stack (nats-server)
/// checks the extended key usage of client certificates, rustls that of server ones.
#[derive(Clone, Copy)]
enum Role {
    Server,
    Client,
}

struct Leaf {
    cert: String,
    key: String,
}

/// A self-signed CA, as an issuer for leaves and as PEM.
fn authority(common_name: &str) -> (Issuer<'static, KeyPair>, String) {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("rcgen generates a P-256 key");
    let pem = params
        .self_signed(&key)
        .expect("rcgen signs a CA certificate")
        .pem();
    (Issuer::new(params, key), pem)
}

fn leaf(common_name: &str, names: &[&str], role: Role, ca: &Issuer<'_, KeyPair>) -> Leaf {
    let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
    // `new` makes an IP SAN of what parses as an IP address and a DNS SAN of the rest.
    let mut params = CertificateParams::new(names).expect("valid subject alternative names");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![match role {
        Role::Server => ExtendedKeyUsagePurpose::ServerAuth,
        Role::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().expect("rcgen generates a P-256 key");
    let cert = params
        .signed_by(&key, ca)
        .expect("rcgen signs a leaf certificate");
    Leaf {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_pem_and_clones_share_the_directory() {
        let pki = Pki::new();
        let clone = pki.clone();
        assert_eq!(pki.dir(), clone.dir());
        for cert in [
            pki.ca_file(),
            pki.server_cert_file(),
            pki.misnamed_server_cert_file(),
            pki.client_cert_file(),
            pki.other_ca_file(),
            pki.untrusted_client_cert_file(),
        ] {
            let text = std::fs::read_to_string(&cert).unwrap();
            assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{cert:?}");
        }
        for key in [
            pki.server_key_file(),
            pki.misnamed_server_key_file(),
            pki.client_key_file(),
            pki.untrusted_client_key_file(),
        ] {
            let text = std::fs::read_to_string(&key).unwrap();
            assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"), "{key:?}");
        }
        let dir = pki.dir().to_path_buf();
        drop(pki);
        assert!(dir.is_dir(), "a clone still holds the directory");
        drop(clone);
        assert!(!dir.exists());
    }

    #[test]
    fn two_pkis_have_different_authorities() {
        let (a, b) = (Pki::new(), Pki::new());
        let ca = |pki: &Pki| std::fs::read_to_string(pki.ca_file()).unwrap();
        assert_ne!(ca(&a), ca(&b));
        assert_ne!(ca(&a), std::fs::read_to_string(a.other_ca_file()).unwrap());
    }
}
