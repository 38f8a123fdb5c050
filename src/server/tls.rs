//! SIP over TLS (RFC 3261 26.2, RFC 5630): the rustls configurations the
//! stream transport ([`super::tcp`]) wraps its connections in, built from
//! the certificate, key and trust anchors the configuration names.
//!
//! As a server we present our certificate chain and, with `client_ca`,
//! demand one from every client and verify it (mutual TLS with a trunk).
//! As a client we verify the server's certificate against `ca` (or the
//! Mozilla roots) and the name we expect it to carry, and present our own
//! chain if the server asks for one. rustls with the *ring* provider: no
//! OpenSSL, and no C toolchain beyond what *ring* builds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;

/// `tls` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The TLS port on each listen address's IP (default 5061, RFC 3261
    /// 26.2); or one port per listen address, in their order, for several
    /// listen addresses on one IP (`port: [5061, 5071]`).
    #[serde(default = "default_ports", deserialize_with = "ports")]
    pub port: Vec<u16>,
    /// Our certificate chain, PEM, leaf first.
    pub certificate: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Mutual TLS: every client must present a certificate that chains to
    /// one of these (PEM); without it clients are not asked for one.
    pub client_ca: Option<PathBuf>,
    /// The roots servers we connect to are verified against (PEM);
    /// default: the Mozilla root programme's (webpki-roots).
    pub ca: Option<PathBuf>,
    /// The chain we show a server that asks for one (mutual TLS), PEM;
    /// default: `certificate`, which then must allow client use too
    /// (extended key usage clientAuth, or none at all).
    pub client_certificate: Option<PathBuf>,
    /// Its key; needed with `client_certificate`.
    pub client_key: Option<PathBuf>,
}

fn default_ports() -> Vec<u16> {
    vec![5061]
}

/// `port: 5061` and `port: [5061, 5071]` both work.
fn ports<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(u16),
        Many(Vec<u16>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(p) => vec![p],
        OneOrMany::Many(v) => v,
    })
}

impl TlsConfig {
    /// The TLS port of the listen address at `index`: its own when ports
    /// are listed per address, else the one port.
    pub fn port_for(&self, index: usize) -> u16 {
        match self.port.as_slice() {
            [one] => *one,
            many => many.get(index).copied().unwrap_or(5061),
        }
    }
}

/// Why the TLS configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("tls: {0}")]
pub struct TlsError(String);

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError(format!("{what} {}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{what} {}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

fn roots(path: &Path, what: &str) -> Result<rustls::RootCertStore, TlsError> {
    let mut store = rustls::RootCertStore::empty();
    for cert in read_certs(path, what)? {
        store
            .add(cert)
            .map_err(|e| TlsError(format!("{what} {}: {e}", path.display())))?;
    }
    Ok(store)
}

/// The TLS side of a listener: what accepting and connecting wrap a TCP
/// connection in, and the names the servers we call are verified by.
#[derive(Clone)]
pub struct Tls {
    /// Wraps connections peers open to us.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// Wraps connections we open.
    pub connector: tokio_rustls::TlsConnector,
    /// The name a server's certificate must carry, by its address; an
    /// address not listed must carry its IP address (a SAN of type IP).
    /// Shared by the clones, and added to as DNS places named servers.
    names: Arc<std::sync::RwLock<HashMap<SocketAddr, ServerName<'static>>>>,
}

impl Tls {
    /// Loads the certificate, key and trust anchors `config` names.
    pub fn load(config: &TlsConfig) -> Result<Self, TlsError> {
        let chain = read_certs(&config.certificate, "certificate")?;
        let key = PrivateKeyDer::from_pem_file(&config.key)
            .map_err(|e| TlsError(format!("key {}: {e}", config.key.display())))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(e.to_string()))?;
        let server = match &config.client_ca {
            Some(path) => {
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots(path, "client_ca")?),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|e| TlsError(format!("client_ca {}: {e}", path.display())))?;
                versions.with_client_cert_verifier(verifier)
            }
            None => versions.with_no_client_auth(),
        }
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| {
            TlsError(format!(
                "certificate {} with key {}: {e}",
                config.certificate.display(),
                config.key.display()
            ))
        })?;
        let trusted = match &config.ca {
            Some(path) => roots(path, "ca")?,
            None => rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        };
        let (client_chain, client_key) = match (&config.client_certificate, &config.client_key) {
            (None, None) => (chain, key),
            (Some(c), Some(k)) => (
                read_certs(c, "client_certificate")?,
                PrivateKeyDer::from_pem_file(k)
                    .map_err(|e| TlsError(format!("client_key {}: {e}", k.display())))?,
            ),
            _ => {
                return Err(TlsError(
                    "client_certificate and client_key go together".into(),
                ))
            }
        };
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(e.to_string()))?
            .with_root_certificates(trusted)
            .with_client_auth_cert(client_chain, client_key)
            .map_err(|e| TlsError(format!("our client certificate: {e}")))?;
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
            names: Arc::default(),
        })
    }

    /// Expects the server at `addr` to prove it is `name` (a host name, or
    /// an IP address in text).
    pub fn expect_name(&self, addr: SocketAddr, name: &str) -> Result<(), TlsError> {
        let name = ServerName::try_from(name.to_string())
            .map_err(|e| TlsError(format!("`{name}` is not a server name: {e}")))?;
        self.names
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr, name);
        Ok(())
    }

    /// The name the server at `addr` must prove it is.
    pub fn name_of(&self, addr: SocketAddr) -> ServerName<'static> {
        self.names
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&addr)
            .cloned()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()))
    }
}

/// A throwaway PKI for tests: a CA and certificates it signs, as PEM
/// files in a temporary directory.
#[cfg(test)]
pub(crate) mod test_pki {
    use std::path::PathBuf;

    /// A CA that signs leaf certificates into `dir`.
    pub(crate) struct Pki {
        pub dir: tempfile::TempDir,
        ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    }

    impl Pki {
        /// A new CA, its certificate in `ca.pem`.
        pub(crate) fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "callflow test CA");
            let key = rcgen::KeyPair::generate().expect("key");
            let ca = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA");
            std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write");
            Self { dir, ca }
        }

        /// The CA's certificate file.
        pub(crate) fn ca(&self) -> PathBuf {
            self.dir.path().join("ca.pem")
        }

        /// A certificate for `names` (host names or IP addresses) and its
        /// key, as `{file}.pem` and `{file}.key`.
        pub(crate) fn leaf(&self, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let params = rcgen::CertificateParams::new(names).expect("params");
            let key = rcgen::KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, &self.ca).expect("sign");
            let (c, k) = (
                self.dir.path().join(format!("{file}.pem")),
                self.dir.path().join(format!("{file}.key")),
            );
            std::fs::write(&c, cert.pem()).expect("write");
            std::fs::write(&k, key.serialize_pem()).expect("write");
            (c, k)
        }

        /// A TLS configuration with a certificate for `names`, trusting
        /// this CA as a client, and with `mutual`, for its clients too.
        pub(crate) fn config(&self, file: &str, names: &[&str], mutual: bool) -> super::TlsConfig {
            let (certificate, key) = self.leaf(file, names);
            super::TlsConfig {
                port: vec![0],
                certificate,
                key,
                client_ca: mutual.then(|| self.ca()),
                ca: Some(self.ca()),
                client_certificate: None,
                client_key: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_mismatched_file_is_a_clear_error() {
        let pki = test_pki::Pki::new();
        let mut config = pki.config("server", &["127.0.0.1"], false);
        assert!(Tls::load(&config).is_ok());
        let (_, other_key) = pki.leaf("other", &["127.0.0.1"]);
        config.key = other_key;
        let why = Tls::load(&config).err().expect("refused").to_string();
        assert!(
            why.contains("certificate") && why.contains("other.key"),
            "{why}"
        );
        config.certificate = pki.dir.path().join("absent.pem");
        let why = Tls::load(&config).err().expect("refused").to_string();
        assert!(why.contains("absent.pem"), "{why}");
        let mut halves = pki.config("server2", &["127.0.0.1"], false);
        halves.client_certificate = Some(halves.certificate.clone());
        let why = Tls::load(&halves).err().expect("refused").to_string();
        assert!(why.contains("go together"), "{why}");
        std::fs::write(pki.dir.path().join("empty.pem"), "").expect("write");
        config.certificate = pki.dir.path().join("empty.pem");
        let why = Tls::load(&config).err().expect("refused").to_string();
        assert!(why.contains("no PEM certificate"), "{why}");
    }

    #[test]
    fn a_server_is_known_by_its_address_unless_named() {
        let pki = test_pki::Pki::new();
        let tls = Tls::load(&pki.config("server", &["127.0.0.1"], false)).expect("load");
        let addr: SocketAddr = "192.0.2.10:5061".parse().expect("addr");
        assert_eq!(
            tls.name_of(addr),
            ServerName::IpAddress("192.0.2.10".parse::<std::net::IpAddr>().expect("ip").into())
        );
        tls.expect_name(addr, "sip.example.net").expect("a name");
        assert_eq!(
            tls.name_of(addr),
            ServerName::try_from("sip.example.net").expect("name")
        );
        assert!(tls.expect_name(addr, "not a name!").is_err());
    }
}
