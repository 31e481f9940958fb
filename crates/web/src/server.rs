//! Connections: one accept loop for TCP, a Unix socket and TLS, with the limits that keep
//! a flood from taking the portal's memory (connections at once, header size and time).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use apppass_core::config::Listen;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tower::ServiceExt;

use crate::routes::State;

/// Connections open at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 512;
/// A client must send its request head (and finish a TLS handshake) within this.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Request heads larger than this are refused (hyper answers 431).
const MAX_HEAD: usize = 16 * 1024;

/// Who is on the other end of a connection: its address (`None` on a Unix socket, where
/// the only peer is the local reverse proxy) and whether it came over TLS.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: Option<IpAddr>,
}

/// Reads the certificate chain and key (PEM) for the built-in TLS.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the TLS certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves until SIGTERM or SIGINT.
pub async fn serve(state: State, tls: Option<Arc<rustls::ServerConfig>>) -> Result<(), String> {
    let listen = state.config.web.listen.clone();
    let router = crate::routes::router(state.clone());
    let acceptor = tls.map(TlsAcceptor::from);
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    match &listen {
        Listen::Tcp(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            let local = listener.local_addr().map_err(|e| e.to_string())?;
            state.log.info(&format!(
                "listening on {scheme}://{local}/ apppassd={}",
                state.config.socket.display()
            ));
            loop {
                let permit = tokio::select! {
                    p = Arc::clone(&limit).acquire_owned() => p.map_err(|e| e.to_string())?,
                    _ = term.recv() => break,
                };
                let (stream, from): (_, SocketAddr) = tokio::select! {
                    r = listener.accept() => match r {
                        Ok(a) => a,
                        // Out of descriptors, say: wait rather than spin.
                        Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue; }
                    },
                    _ = term.recv() => break,
                };
                let peer = Peer {
                    addr: Some(from.ip()),
                };
                spawn(router.clone(), acceptor.clone(), stream, peer, permit);
            }
        }
        Listen::Unix(path) => {
            // A socket left by an earlier run would make bind fail.
            if std::fs::symlink_metadata(path)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            {
                let _ = std::fs::remove_file(path);
            }
            let listener = UnixListener::bind(path)
                .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
            // The proxy connects as a member of the portal's group, whatever the umask.
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o660))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            state.log.info(&format!(
                "listening on unix:{} apppassd={}",
                path.display(),
                state.config.socket.display()
            ));
            loop {
                let permit = tokio::select! {
                    p = Arc::clone(&limit).acquire_owned() => p.map_err(|e| e.to_string())?,
                    _ = term.recv() => break,
                };
                let stream = tokio::select! {
                    r = listener.accept() => match r {
                        Ok((s, _)) => s,
                        Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue; }
                    },
                    _ = term.recv() => break,
                };
                spawn(
                    router.clone(),
                    acceptor.clone(),
                    stream,
                    Peer { addr: None },
                    permit,
                );
            }
            let _ = std::fs::remove_file(path);
        }
    }
    state.log.info("stopping (SIGTERM)");
    Ok(())
}

fn spawn<S>(
    router: axum::Router,
    acceptor: Option<TlsAcceptor>,
    stream: S,
    peer: Peer,
    permit: tokio::sync::OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let _permit = permit;
        match acceptor {
            Some(acceptor) => {
                let Ok(Ok(tls)) = tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(stream)).await
                else {
                    return;
                };
                connection(router, tls, peer).await;
            }
            None => connection(router, stream, peer).await,
        }
    });
}

async fn connection<S>(router: axum::Router, stream: S, peer: Peer)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = router.map_request(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(peer);
        request
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
        .await;
}
