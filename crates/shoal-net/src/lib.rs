//! Serving an axum router on a listener, over plain HTTP or HTTPS (rustls), with HTTP/1.1,
//! HTTP/2 and connection upgrades: the one accept loop the API server and the kubelet share.
//! Certificates are the caller's business.

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The client certificate a TLS connection presented (DER), as a request extension: the
/// TLS configuration has already checked it against its trusted roots.
#[derive(Debug, Clone)]
pub struct PeerCertificate(pub Arc<Vec<u8>>);

/// Serves `app` on `listener` until `shutdown`, over TLS when `tls` is given; each request of
/// a connection that presented a client certificate carries it as a [`PeerCertificate`].
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Without it, small streamed responses wait for delayed ACKs (40 ms per watch event).
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let acceptor = acceptor.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let result = match acceptor {
                Some(acc) => match acc.accept(stream).await {
                    Ok(tls) => {
                        let peer = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| PeerCertificate(Arc::new(c.as_ref().to_vec())));
                        let app = tower::ServiceExt::map_request(
                            app,
                            move |mut req: http::Request<hyper::body::Incoming>| {
                                if let Some(p) = &peer {
                                    req.extensions_mut().insert(p.clone());
                                }
                                req
                            },
                        );
                        let service = TowerToHyperService::new(app);
                        let conn =
                            builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                        tokio::select! { r = conn => r, _ = shutdown.cancelled() => Ok(()) }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        return;
                    }
                },
                None => {
                    let service = TowerToHyperService::new(app);
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    tokio::select! { r = conn => r, _ = shutdown.cancelled() => Ok(()) }
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}
