//! `amqps` end to end: the test starts a TLS-terminating proxy (rustls, with a CA and a
//! server certificate made by rcgen) in front of the broker's plain port, and the client
//! connects through it with `cacertfile` in the URI, or with the builder, and does real work.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use amqp_client::{BasicProperties, Confirmation, ConnectionConfig, Error};
use amqp_tests::{broker_addr, exclusive, publish_confirmed, unique};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(unique("tls"));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA (its PEM in a file) and a server certificate it signed for `localhost` and
/// `127.0.0.1`.
struct Pki {
    _dir: TempDir,
    ca_file: PathBuf,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
}

impl Pki {
    fn new() -> Self {
        let dir = TempDir::new();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.distinguished_name.push(
            DnType::CommonName,
            format!("amqp-tests CA {}", dir.0.display()),
        );
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca_file = dir.0.join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        Self {
            _dir: dir,
            ca_file,
            server_chain: vec![cert.der().clone()],
            server_key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }
    }

    fn acceptor(&self) -> TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(self.server_chain.clone(), self.server_key.clone_key())
            .unwrap();
        TlsAcceptor::from(Arc::new(config))
    }
}

/// Starts the proxy: each connection's TLS is terminated and its bytes forwarded to the
/// broker's plain port.
async fn tls_proxy(acceptor: TlsAcceptor) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A failed handshake is the client's business; the test sees it there.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut broker = TcpStream::connect(broker_addr())
                    .await
                    .expect("the proxy reaches the broker");
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
            });
        }
    });
    addr
}

/// Declares, publishes with a confirm and gets the message back, over `conn`.
async fn round_trip(conn: &amqp_client::Connection) {
    let ch = conn.open_channel().await.unwrap();
    let queue = unique("tls");
    ch.queue_declare(&queue, exclusive()).await.unwrap();
    ch.confirm_select().await.unwrap();
    let body = vec![7u8; 300_000];
    assert_eq!(
        publish_confirmed(&ch, "", &queue, BasicProperties::default(), body.clone()).await,
        Confirmation::Ack
    );
    let got = ch.get(&queue, false).await.unwrap().expect("the message");
    assert_eq!(got.delivery.body, body);
    got.delivery.ack().await.unwrap();
}

#[tokio::test]
async fn amqps_uri_with_cacertfile_through_a_tls_proxy() {
    let pki = Pki::new();
    let addr = tls_proxy(pki.acceptor()).await;
    let uri = format!(
        "amqps://guest:guest@localhost:{}/?cacertfile={}",
        addr.port(),
        pki.ca_file.display()
    );
    let conn = amqp_client::Connection::connect(&uri).await.unwrap();
    assert_eq!(conn.endpoint().port, addr.port());
    round_trip(&conn).await;
    conn.close().await.unwrap();
}

#[tokio::test]
async fn builder_with_ca_file_through_a_tls_proxy() {
    let pki = Pki::new();
    let addr = tls_proxy(pki.acceptor()).await;
    let config = ConnectionConfig::builder()
        .host("127.0.0.1")
        .port(addr.port())
        .sasl(amqp_tests::config().sasl)
        .virtual_host(amqp_tests::config().virtual_host)
        .ca_file(&pki.ca_file)
        .build();
    let conn = amqp_client::Connection::connect_with(config).await.unwrap();
    round_trip(&conn).await;
    conn.close().await.unwrap();
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let stranger = Pki::new();
    let addr = tls_proxy(pki.acceptor()).await;
    let uri = format!(
        "amqps://guest:guest@localhost:{}/?cacertfile={}",
        addr.port(),
        stranger.ca_file.display()
    );
    let err = amqp_client::Connection::connect(&uri).await.unwrap_err();
    // The handshake fails verifying the certificate; tokio-rustls reports it as an I/O
    // error wrapping rustls's.
    let tls_error = match &err {
        Error::Tls(e) => Some(e.clone()),
        Error::Io(e) => e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .cloned(),
        _ => None,
    };
    assert!(
        matches!(tls_error, Some(rustls::Error::InvalidCertificate(_))),
        "{err:?}"
    );
}
