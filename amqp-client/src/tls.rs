//! TLS for `amqps`: a rustls connector from [`TlsOptions`], with the `ring` provider.
//!
//! Roots come from `ca_file` or, without one, the system store. A client certificate and key
//! are presented when given (SASL `EXTERNAL` logs in with them). `verify: false` accepts any
//! server certificate but still checks the handshake signatures, so the peer must at least
//! hold the key of the certificate it shows.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::TlsConnector;

use crate::config::TlsOptions;
use crate::error::{ConfigError, Error};

/// A connector for `options`: the caller's rustls config if there is one, otherwise one
/// built from the file options.
///
/// # Errors
/// [`ConfigError::File`] when a CA, certificate or key file cannot be read or holds nothing
/// usable (or no system root certificate can be loaded), [`ConfigError::Conflict`] for a
/// certificate without a key or the reverse, and [`Error::Tls`] when rustls refuses the
/// result (such as a key that does not match the certificate).
pub(crate) fn connector(options: &TlsOptions) -> Result<TlsConnector, Error> {
    if let Some(config) = &options.config {
        return Ok(TlsConnector::from(Arc::clone(config)));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let builder = if options.verify {
        builder.with_root_certificates(root_store(options.ca_file.as_deref())?)
    } else {
        tracing::warn!(
            "TLS server certificate verification is off (verify_none): \
             anyone on the network path can impersonate the broker"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate::new(&provider)))
    };
    let config = match (&options.client_cert, &options.client_key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(load_certs(cert, "client certificate")?, load_key(key)?)?,
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => return Err(conflict("certfile", "needs keyfile too")),
        (None, Some(_)) => return Err(conflict("keyfile", "needs certfile too")),
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The name to send as SNI and verify the certificate against: `server_name` if set,
/// otherwise `host` (a DNS name, or an IP address matched against the certificate's IP
/// addresses).
///
/// # Errors
/// [`ConfigError::Value`] when the name is neither a valid DNS name nor an IP address.
pub(crate) fn server_name(options: &TlsOptions, host: &str) -> Result<ServerName<'static>, Error> {
    let (key, name) = match &options.server_name {
        Some(name) => ("server_name_indication", name.as_str()),
        None => ("host", host),
    };
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    match ServerName::try_from(bare) {
        Ok(server_name) => Ok(server_name.to_owned()),
        Err(_) => Err(ConfigError::Value {
            key,
            value: name.to_owned(),
        }
        .into()),
    }
}

fn conflict(option: &'static str, reason: &'static str) -> Error {
    ConfigError::Conflict { option, reason }.into()
}

fn file_error(what: &'static str, path: &Path, reason: impl ToString) -> Error {
    ConfigError::File {
        what,
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
    .into()
}

/// The trusted roots: every certificate of `ca_file`, or the system's.
fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    if let Some(path) = ca_file {
        for cert in load_certs(path, "CA file")? {
            roots
                .add(cert)
                .map_err(|e| file_error("CA file", path, e))?;
        }
        return Ok(roots);
    }
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!(%error, "could not load some of the system's root certificates");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    if ignored > 0 {
        tracing::warn!(
            ignored,
            "skipped system root certificates rustls cannot parse"
        );
    }
    if added == 0 {
        let reason = native.errors.first().map_or_else(
            || "no root certificate found; name a CA file (cacertfile)".to_owned(),
            ToString::to_string,
        );
        return Err(ConfigError::File {
            what: "root certificates",
            path: "(system store)".to_owned(),
            reason,
        }
        .into());
    }
    tracing::debug!(added, "loaded the system's root certificates");
    Ok(roots)
}

/// Every certificate in a PEM file; at least one.
fn load_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(what, path, e))?;
    if certs.is_empty() {
        return Err(file_error(what, path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

/// The first private key in a PEM file.
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => file_error(
            "client key",
            path,
            "no unencrypted PKCS#8, PKCS#1 or SEC1 private key in the file",
        ),
        e => file_error("client key", path, e),
    })
}

/// `verify_none`: any certificate chain and name is accepted, but the handshake signatures
/// are still checked against the presented certificate with the provider's algorithms.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AcceptAnyCertificate {
    fn new(provider: &CryptoProvider) -> Self {
        Self {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use rustls::server::WebPkiClientVerifier;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::TlsAcceptor;

    use super::*;

    /// A temporary directory removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "amqp-client-tls-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        fn write(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A CA, and certificates it signed for a server and a client, as PEM files.
    struct Pki {
        dir: TempDir,
        ca: PathBuf,
        ca_der: CertificateDer<'static>,
        server_chain: Vec<CertificateDer<'static>>,
        server_key: PrivateKeyDer<'static>,
        client_cert: PathBuf,
        client_key: PathBuf,
    }

    fn ca(name: &str) -> (CertificateParams, KeyPair, rcgen::Certificate) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (params, key, cert)
    }

    fn leaf(
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
        issuer: &Issuer<'_, KeyPair>,
    ) -> (rcgen::Certificate, KeyPair) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, "leaf");
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        (cert, key)
    }

    impl Pki {
        fn new() -> Self {
            let dir = TempDir::new();
            // A CA name of its own: two CAs of one name make webpki try the wrong one's key
            // (BadSignature rather than UnknownIssuer).
            let name = format!("test CA {}", dir.0.display());
            let (ca_params, ca_key, ca_cert) = ca(&name);
            let issuer = Issuer::new(ca_params, ca_key);
            let (server, server_key) = leaf(
                &["broker.test", "127.0.0.1"],
                ExtendedKeyUsagePurpose::ServerAuth,
                &issuer,
            );
            let (client, client_key) = leaf(
                &["client.test"],
                ExtendedKeyUsagePurpose::ClientAuth,
                &issuer,
            );
            Self {
                ca: dir.write("ca.pem", &ca_cert.pem()),
                ca_der: ca_cert.der().clone(),
                server_chain: vec![server.der().clone()],
                server_key: PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
                client_cert: dir.write("client.pem", &client.pem()),
                client_key: dir.write("client.key", &client_key.serialize_pem()),
                dir,
            }
        }

        /// A server config; with `require_client_cert`, only clients with a certificate
        /// from our CA get in.
        fn acceptor(&self, require_client_cert: bool) -> TlsAcceptor {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .unwrap();
            let builder = if require_client_cert {
                let mut roots = RootCertStore::empty();
                roots.add(self.ca_der.clone()).unwrap();
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .unwrap();
                builder.with_client_cert_verifier(verifier)
            } else {
                builder.with_no_client_auth()
            };
            let config = builder
                .with_single_cert(self.server_chain.clone(), self.server_key.clone_key())
                .unwrap();
            TlsAcceptor::from(Arc::new(config))
        }

        fn options(&self) -> TlsOptions {
            TlsOptions {
                ca_file: Some(self.ca.clone()),
                ..TlsOptions::default()
            }
        }
    }

    /// Runs a handshake over loopback TCP and one echo round trip; returns the client's
    /// error, if any (or the server's).
    async fn handshake(
        acceptor: TlsAcceptor,
        options: &TlsOptions,
        host: &str,
    ) -> Result<(), std::io::Error> {
        let limit = std::time::Duration::from_secs(10);
        tokio::time::timeout(limit, handshake_inner(acceptor, options, host))
            .await
            .expect("handshake hung")
    }

    async fn handshake_inner(
        acceptor: TlsAcceptor,
        options: &TlsOptions,
        host: &str,
    ) -> Result<(), std::io::Error> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut tls = acceptor.accept(tcp).await?;
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await?;
            tls.write_all(&buf).await?;
            tls.shutdown().await?;
            Ok::<_, std::io::Error>(())
        });
        let connector = connector(options).map_err(std::io::Error::other)?;
        let name = server_name(options, host).map_err(std::io::Error::other)?;
        let tcp = TcpStream::connect(addr).await?;
        let client = async {
            let mut tls = connector.connect(name, tcp).await?;
            tls.write_all(b"AMQP").await?;
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await?;
            assert_eq!(&buf, b"AMQP");
            Ok::<_, std::io::Error>(())
        }
        .await;
        let served = server.await.expect("server task panicked");
        client.and(served)
    }

    fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
        e.get_ref()?.downcast_ref::<rustls::Error>()
    }

    #[tokio::test]
    async fn verifies_against_the_ca() {
        let pki = Pki::new();
        handshake(pki.acceptor(false), &pki.options(), "broker.test")
            .await
            .unwrap();
        // An IP address is matched against the certificate's IP addresses.
        handshake(pki.acceptor(false), &pki.options(), "127.0.0.1")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn server_name_overrides_the_host() {
        let pki = Pki::new();
        let options = TlsOptions {
            server_name: Some("broker.test".into()),
            ..pki.options()
        };
        handshake(pki.acceptor(false), &options, "10.1.2.3")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn wrong_name_fails() {
        let pki = Pki::new();
        let e = handshake(pki.acceptor(false), &pki.options(), "other.test")
            .await
            .unwrap_err();
        assert!(
            matches!(
                rustls_error(&e),
                Some(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName
                        | rustls::CertificateError::NotValidForNameContext { .. }
                ))
            ),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn wrong_ca_fails() {
        let pki = Pki::new();
        let other = Pki::new();
        let options = TlsOptions {
            ca_file: Some(other.ca.clone()),
            ..TlsOptions::default()
        };
        let e = handshake(pki.acceptor(false), &options, "broker.test")
            .await
            .unwrap_err();
        assert!(
            matches!(
                rustls_error(&e),
                Some(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer
                ))
            ),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn verify_none_accepts_an_unknown_ca() {
        let pki = Pki::new();
        let other = Pki::new();
        let options = TlsOptions {
            ca_file: Some(other.ca.clone()),
            verify: false,
            ..TlsOptions::default()
        };
        handshake(pki.acceptor(false), &options, "any.name")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn presents_the_client_certificate() {
        let pki = Pki::new();
        let options = TlsOptions {
            client_cert: Some(pki.client_cert.clone()),
            client_key: Some(pki.client_key.clone()),
            ..pki.options()
        };
        handshake(pki.acceptor(true), &options, "broker.test")
            .await
            .unwrap();
        // Without one, the server refuses the client.
        assert!(
            handshake(pki.acceptor(true), &pki.options(), "broker.test")
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn caller_config_wins() {
        let pki = Pki::new();
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca_der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let options = TlsOptions {
            // Would fail if it were read.
            ca_file: Some(pki.dir.0.join("missing.pem")),
            config: Some(Arc::new(config)),
            ..TlsOptions::default()
        };
        handshake(pki.acceptor(false), &options, "broker.test")
            .await
            .unwrap();
    }

    fn config_error(options: &TlsOptions) -> ConfigError {
        match connector(options) {
            Err(Error::Config(e)) => e,
            Err(e) => panic!("not a config error: {e:?}"),
            Ok(_) => panic!("connector built"),
        }
    }

    #[test]
    fn file_errors() {
        let pki = Pki::new();
        let missing = pki.dir.0.join("missing.pem");
        let empty = pki.dir.write("empty.pem", "");
        let garbage = pki
            .dir
            .write("garbage.pem", "-----BEGIN CERTIFICATE-----\nnot base64!\n");

        for (ca_file, what) in [
            (&missing, "CA file"),
            (&empty, "CA file"),
            (&garbage, "CA file"),
        ] {
            let e = config_error(&TlsOptions {
                ca_file: Some(ca_file.clone()),
                ..TlsOptions::default()
            });
            let ConfigError::File { what: w, path, .. } = &e else {
                panic!("{e:?}")
            };
            assert_eq!((*w, path.as_str()), (what, &*ca_file.display().to_string()));
        }

        // A certificate file where the key should be.
        let e = config_error(&TlsOptions {
            client_cert: Some(pki.client_cert.clone()),
            client_key: Some(pki.client_cert.clone()),
            ..pki.options()
        });
        assert!(
            matches!(&e, ConfigError::File { what: "client key", reason, .. } if reason.contains("private key")),
            "{e:?}"
        );
        let e = config_error(&TlsOptions {
            client_cert: Some(empty.clone()),
            client_key: Some(pki.client_key.clone()),
            ..pki.options()
        });
        assert!(
            matches!(
                &e,
                ConfigError::File {
                    what: "client certificate",
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            config_error(&TlsOptions {
                client_cert: Some(pki.client_cert.clone()),
                ..pki.options()
            }),
            ConfigError::Conflict {
                option: "certfile",
                reason: "needs keyfile too"
            }
        );
        assert_eq!(
            config_error(&TlsOptions {
                client_key: Some(pki.client_key.clone()),
                ..pki.options()
            }),
            ConfigError::Conflict {
                option: "keyfile",
                reason: "needs certfile too"
            }
        );
    }

    #[test]
    fn mismatched_key_is_a_tls_error() {
        let pki = Pki::new();
        let other = Pki::new();
        let result = connector(&TlsOptions {
            client_cert: Some(pki.client_cert.clone()),
            client_key: Some(other.client_key.clone()),
            ..pki.options()
        });
        assert!(matches!(result, Err(Error::Tls(_))), "{:?}", result.err());
    }

    #[test]
    fn server_names() {
        let options = TlsOptions::default();
        assert_eq!(
            server_name(&options, "broker.test").unwrap(),
            ServerName::try_from("broker.test").unwrap()
        );
        assert!(matches!(
            server_name(&options, "::1").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name(&options, "[::1]").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name(&options, "bad name"),
            Err(Error::Config(ConfigError::Value { key: "host", .. }))
        ));
        let options = TlsOptions {
            server_name: Some("sni.test".into()),
            ..TlsOptions::default()
        };
        assert_eq!(
            server_name(&options, "10.0.0.1").unwrap(),
            ServerName::try_from("sni.test").unwrap()
        );
        let options = TlsOptions {
            server_name: Some("bad name".into()),
            ..TlsOptions::default()
        };
        assert!(matches!(
            server_name(&options, "h"),
            Err(Error::Config(ConfigError::Value {
                key: "server_name_indication",
                ..
            }))
        ));
    }
}
