#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `nagare chat` dials `wss://`: through a TLS terminator (a certificate made for the test) in
//! front of a test gateway, it streams an answer when the certificate is trusted (SSL_CERT_FILE)
//! and refuses the connection when it is not.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use nagare_gateway::provider::{MockProvider, MockSettings};
use nagare_tests::fake_lambda::workspace_binary;
use nagare_tests::{Gateway, TempDir, dev_token};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

/// A self-signed certificate for `localhost` and 127.0.0.1, made with the openssl command line.
fn certificate(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        // A server certificate, not a CA: rustls refuses a CA certificate as the end entity.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is missing: apt-get install openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    (cert, key)
}

/// Terminates TLS on a free port and forwards each connection to `backend`; counts the
/// handshakes that completed.
async fn tls_terminator(
    cert: &Path,
    key: &Path,
    backend: std::net::SocketAddr,
) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counted = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, counted) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let mut plain = TcpStream::connect(backend).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (addr, handshakes)
}

#[tokio::test]
async fn nagare_chat_dials_wss_and_checks_the_certificate() {
    let dir = TempDir::new("wss").unwrap();
    let (cert, key) = certificate(dir.path());
    let gw = Gateway::start(
        Arc::new(MockProvider::new(MockSettings::unpaced())),
        "mock",
        &[],
    )
    .await
    .unwrap();
    let (tls, handshakes) = tls_terminator(&cert, &key, gw.addr).await;
    let url = format!("wss://localhost:{}/v1/ws", tls.port());
    let token = dev_token("alice", &["chat"]);
    let nagare = workspace_binary("nagare").unwrap();
    let chat = |trust: Option<&Path>| {
        let mut command = tokio::process::Command::new(&nagare);
        command.args(["chat", "hello", "--url", &url, "--token", &token]);
        match trust {
            Some(cert) => command.env("SSL_CERT_FILE", cert),
            // An empty bundle: the test's certificate is trusted by nothing.
            None => command.env("SSL_CERT_FILE", dir.path().join("none.pem")),
        };
        command.output()
    };

    let trusted = chat(Some(&cert)).await.unwrap();
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert!(String::from_utf8_lossy(&trusted.stdout).starts_with("You said: hello."));
    assert_eq!(handshakes.load(Ordering::SeqCst), 1);

    std::fs::write(dir.path().join("none.pem"), "").unwrap();
    let untrusted = chat(None).await.unwrap();
    assert_eq!(untrusted.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    assert_eq!(
        handshakes.load(Ordering::SeqCst),
        1,
        "no second handshake completed"
    );
}
