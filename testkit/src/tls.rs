//! TLS on a test server: its `tls {}` config block, and the TLS client of the
//! readiness check.
//!
//! The readiness check reads the `INFO` line a server sends as soon as a client
//! connects. A server with `handshake_first: true` sends nothing before a TLS
//! handshake, so for it the check must do the handshake first. On any TLS server the
//! check completes a handshake: one it dropped halfway would leave a "TLS handshake
//! error" in the server log at every start, noise in the log a failing test prints.
//! The check trusts the test's CA and presents the test's client certificate, which
//! also satisfies `verify: true`.

use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::sync::Arc;

use async_nats::rustls::pki_types::pem::PemObject;
use async_nats::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use async_nats::rustls::{self, ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::Pki;
use crate::builder::quote_path;

/// How long the server waits for a client's TLS handshake (nats-server's own default,
/// written out so that timings measured against testkit servers stay put). It is also
/// how long a client that does not start TLS on a TLS-first server waits to be dropped.
pub const TLS_HANDSHAKE_TIMEOUT_SECS: u32 = 2;

/// The TLS settings of a [`ServerBuilder`](crate::ServerBuilder).
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsSettings {
    pub pki: Option<Pki>,
    pub verify_clients: bool,
    pub handshake_first: bool,
    /// Serve [`Pki::misnamed_server_cert_file`] instead of the certificate valid for
    /// the server's address.
    pub misnamed: bool,
}

impl TlsSettings {
    /// # Panics
    /// If a TLS option is set without the certificates to go with it.
    pub(crate) fn check(&self) {
        assert!(
            self.pki.is_some() || !(self.verify_clients || self.handshake_first || self.misnamed),
            "tls_verify_clients, tls_handshake_first and tls_misnamed need certificates: add .tls(&pki)"
        );
    }

    /// The `tls {}` block, or nothing without TLS. With TLS every client must use it:
    /// nats-server then announces `tls_required` and refuses plaintext clients.
    pub(crate) fn render(&self) -> String {
        let Some(pki) = &self.pki else {
            return String::new();
        };
        let (cert, key) = if self.misnamed {
            (
                pki.misnamed_server_cert_file(),
                pki.misnamed_server_key_file(),
            )
        } else {
            (pki.server_cert_file(), pki.server_key_file())
        };
        let mut block = format!(
            "tls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  timeout: {}\n",
            quote_path(&cert),
            quote_path(&key),
            quote_path(&pki.ca_file()),
            TLS_HANDSHAKE_TIMEOUT_SECS,
        );
        if self.verify_clients {
            // Clients must present a certificate signed by ca_file.
            block += "  verify: true\n";
        }
        if self.handshake_first {
            // `true`, not a fallback delay: a client that waits for INFO gets nothing.
            block += "  handshake_first: true\n";
        }
        block += "}\n";
        block
    }

    /// What the readiness check needs to speak TLS to this server, if it serves TLS.
    pub(crate) fn probe(&self) -> Option<TlsProbe> {
        let pki = self.pki.as_ref()?;
        Some(TlsProbe {
            config: Arc::new(client_config(pki)),
            handshake_first: self.handshake_first,
        })
    }
}

/// The readiness check's side of a TLS server.
pub(crate) struct TlsProbe {
    config: Arc<ClientConfig>,
    /// The handshake comes before `INFO` rather than after it.
    pub handshake_first: bool,
}

impl TlsProbe {
    /// A TLS client stream over a loopback connection. The handshake happens on the
    /// first read, or in [`finish_handshake`].
    pub(crate) fn client_stream(
        &self,
        stream: TcpStream,
    ) -> Option<StreamOwned<ClientConnection, TcpStream>> {
        let name = ServerName::from(std::net::IpAddr::from(Ipv4Addr::LOCALHOST));
        let connection = ClientConnection::new(Arc::clone(&self.config), name).ok()?;
        Some(StreamOwned::new(connection, stream))
    }
}

/// Completes the handshake (if it has not happened yet) and closes the TLS session
/// politely, so the server has nothing to complain about. Failures are ignored: the
/// server answered already, which is all readiness means.
pub(crate) fn finish_handshake(mut stream: StreamOwned<ClientConnection, TcpStream>) {
    if stream.conn.complete_io(&mut stream.sock).is_ok() {
        stream.conn.send_close_notify();
        let _ = stream.conn.complete_io(&mut stream.sock);
    }
}

/// Trusts the test CA and presents the test client certificate. The ring provider is
/// named explicitly: the process-wide default is ambiguous when another crate in the
/// build turns on a second rustls backend.
fn client_config(pki: &Pki) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    for cert in certificates(&pki.ca_file()) {
        roots
            .add(cert)
            .unwrap_or_else(|e| panic!("the test CA is not a valid trust anchor: {e}"));
    }
    let key_file = pki.client_key_file();
    let key = PrivateKeyDer::from_pem_file(&key_file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", key_file.display()));
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(certificates(&pki.client_cert_file()), key)
        .unwrap_or_else(|e| panic!("the test client certificate is unusable: {e}"))
}

fn certificates(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_block_names_the_files_and_only_the_options_asked_for() {
        let pki = Pki::new();
        let mut settings = TlsSettings {
            pki: Some(pki.clone()),
            ..TlsSettings::default()
        };
        let plain = settings.render();
        let ca = format!("  ca_file: \"{}\"\n", pki.ca_file().display());
        assert!(
            plain.starts_with("tls {\n") && plain.contains(&ca),
            "{plain}"
        );
        assert!(plain.contains("  timeout: 2\n"), "{plain}");
        assert!(!plain.contains("verify") && !plain.contains("handshake_first"));

        settings.verify_clients = true;
        settings.handshake_first = true;
        let strict = settings.render();
        assert!(strict.ends_with("  verify: true\n  handshake_first: true\n}\n"));
        assert!(TlsSettings::default().render().is_empty());

        settings.misnamed = true;
        let misnamed = settings.render();
        let cert = format!(
            "  cert_file: \"{}\"\n",
            pki.misnamed_server_cert_file().display()
        );
        assert!(misnamed.contains(&cert), "{misnamed}");
    }

    #[test]
    fn the_readiness_check_speaks_tls_exactly_when_the_server_does() {
        let pki = Pki::new();
        assert!(TlsSettings::default().probe().is_none());
        let settings = TlsSettings {
            pki: Some(pki),
            handshake_first: true,
            ..TlsSettings::default()
        };
        assert!(settings.probe().is_some_and(|probe| probe.handshake_first));
    }
}
