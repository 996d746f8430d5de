//! The `wasi:http` front end: serves a container on its pod IP and port, and in process to
//! the node's ingress ([`local_handler`]), a fresh instance per request.

use crate::guest::Guest;
use hyper::server::conn::http1;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wasmtime::Store;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// Builds the store for one request, in the given engine.
pub type StoreFactory =
    Arc<dyn Fn(&wasmtime::Engine) -> std::io::Result<Store<Guest>> + Send + Sync>;

/// A component made ready to instantiate in one engine.
#[derive(Clone)]
pub struct Ready {
    pub engine: wasmtime::Engine,
    pub pre: ProxyPre<Guest>,
}

/// Connections one container serves at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 1024;
/// Instances (requests in progress) one container has at once; more requests wait for one to
/// finish. With the memory budget, this bounds the host state a burst of requests can make.
pub const MAX_INSTANCES: usize = 256;

/// HTTP instances made, by allocator.
#[derive(Debug, Default)]
pub struct Counts {
    pooled: std::sync::atomic::AtomicU64,
    on_demand: std::sync::atomic::AtomicU64,
}

impl Counts {
    /// `(from the pool, on demand)`.
    pub fn get(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.pooled.load(Relaxed), self.on_demand.load(Relaxed))
    }
}

/// One container's request handling, shared by its socket and its in-process handler.
pub struct Server {
    /// Instances from the pooling allocator, when the container fits a slot.
    pooled: Option<Ready>,
    /// Instances allocated on demand: without a pool, or when it is full.
    on_demand: Ready,
    new_store: StoreFactory,
    instances: Arc<tokio::sync::Semaphore>,
    counts: Arc<Counts>,
    /// Idle instances kept for the next request, when the pod opted in to reuse.
    idle: Option<std::sync::Mutex<Vec<Instance>>>,
}

/// An instance with its store, ready for a request.
type Instance = (Store<Guest>, wasmtime_wasi_http::p2::bindings::Proxy);

/// Idle instances one container keeps for reuse at most.
pub const MAX_IDLE: usize = 16;

impl Server {
    pub fn new(
        on_demand: Ready,
        pooled: Option<Ready>,
        new_store: StoreFactory,
        counts: Arc<Counts>,
        reuse: bool,
    ) -> Arc<Self> {
        Arc::new(Server {
            pooled,
            on_demand,
            new_store,
            instances: Arc::new(tokio::sync::Semaphore::new(MAX_INSTANCES)),
            counts,
            idle: reuse.then(Default::default),
        })
    }

    /// An idle instance, with reuse on.
    fn take_idle(&self) -> Option<Instance> {
        self.idle
            .as_ref()?
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
    }

    /// Keeps an instance that served its request well for the next one (reuse on, room left).
    fn give_back(&self, instance: Instance) {
        if let Some(idle) = &self.idle {
            let mut idle = idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push(instance);
            }
        }
    }

    /// A fresh instance: from the pool if the container has one and it has a free slot,
    /// else on demand.
    async fn instantiate(
        &self,
    ) -> Result<(Store<Guest>, wasmtime_wasi_http::p2::bindings::Proxy), std::io::Error> {
        let err = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
        if let Some(p) = &self.pooled {
            let mut store = (self.new_store)(&p.engine)?;
            match p.pre.instantiate_async(&mut store).await {
                Ok(proxy) => {
                    self.counts
                        .pooled
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    metrics::counter!("shoal_wasm_instantiations_total", "kind" => "http", "allocator" => "pooling").increment(1);
                    return Ok((store, proxy));
                }
                Err(e)
                    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                        .is_some() =>
                {
                    metrics::counter!("shoal_wasm_pool_exhausted_total").increment(1);
                }
                Err(e) => return Err(err(&format!("{e:#}"))),
            }
        }
        let mut store = (self.new_store)(&self.on_demand.engine)?;
        let proxy = self
            .on_demand
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| err(&format!("{e:#}")))?;
        self.counts
            .on_demand
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!("shoal_wasm_instantiations_total", "kind" => "http", "allocator" => "on-demand").increment(1);
        Ok((store, proxy))
    }

    /// A guest that fails a request answers 500, as a crashed upstream would behind a proxy.
    async fn handle<B>(
        self: &Arc<Self>,
        req: hyper::Request<B>,
    ) -> hyper::Response<HyperOutgoingBody>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        use http_body_util::BodyExt;
        // Held until the response head is ready; the semaphore is never closed.
        let _permit = self.instances.clone().acquire_owned().await;
        match self.instance(req).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::debug!(error = %e, "guest request failed");
                let body = http_body_util::Full::new(bytes::Bytes::from(format!("{e}\n")))
                    .map_err(|never| match never {})
                    .boxed_unsync();
                let mut resp = hyper::Response::new(body);
                *resp.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                resp
            }
        }
    }
}

/// The container's in-process handler: requests run on the guests' runtime, as those from
/// its socket do — in the caller's task when it is already there (a front door serving on
/// that runtime, [`shoal_runtime::local_http::LocalHttp::home`]), else in a task of its own.
pub fn local_handler(
    server: Arc<Server>,
    guests: tokio::runtime::Handle,
) -> shoal_runtime::local_http::Handler {
    use http_body_util::BodyExt;
    use shoal_runtime::local_http::Body;
    Arc::new(move |req: http::Request<Body>| {
        let server = server.clone();
        // A client's body failing reaches the guest as wasi:http's error for it.
        let req = req.map(|b| {
            b.map_err(|e| ErrorCode::InternalError(Some(e.to_string())))
                .boxed_unsync()
        });
        let answer = async move {
            let resp = server.handle(req).await;
            resp.map(|b| b.map_err(|e| e.into()).boxed_unsync())
        };
        let here = tokio::runtime::Handle::try_current().is_ok_and(|h| h.id() == guests.id());
        if here {
            return Box::pin(answer);
        }
        let task = guests.spawn(answer);
        Box::pin(async move {
            task.await.unwrap_or_else(|e| {
                let mut resp = http::Response::new(
                    http_body_util::Full::new(bytes::Bytes::from(format!("{e}\n")))
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                );
                *resp.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                resp
            })
        })
    })
}

/// An HTTP/1.0 request may name no host; `wasi:http` wants an authority, so such a request
/// gets the address it came in on as its `Host`, as a server without virtual hosts reads it.
fn default_host<B>(req: &mut hyper::Request<B>, local: Option<std::net::SocketAddr>) {
    if req.uri().authority().is_some() || req.headers().contains_key(http::header::HOST) {
        return;
    }
    if let Some(v) = local.and_then(|a| http::HeaderValue::from_str(&a.to_string()).ok()) {
        req.headers_mut().insert(http::header::HOST, v);
    }
}

/// Serves until `stop` fires, then lets requests in flight finish for up to `grace()`. The
/// in-process `registration` is given up with the listener.
pub async fn serve(
    listener: TcpListener,
    server: Arc<Server>,
    registration: Option<shoal_runtime::local_http::Registration>,
    stop: CancellationToken,
    grace: impl Fn() -> Duration,
) {
    let mut conns = JoinSet::new();
    let local = listener.local_addr().ok();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept(), if conns.len() < MAX_CONNECTIONS => {
                let Ok((sock, _)) = accepted else { continue };
                // Without it a guest's chunked body waits ~40 ms on Nagle and delayed ACKs.
                let _ = sock.set_nodelay(true);
                let server = server.clone();
                conns.spawn(async move {
                    let service = hyper::service::service_fn(move |mut req| {
                        let server = server.clone();
                        default_host(&mut req, local);
                        async move {
                            Ok::<_, std::convert::Infallible>(server.handle(req).await)
                        }
                    });
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(sock), service)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(registration);
    drop(listener);
    let _ = tokio::time::timeout(grace(), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
}

impl Server {
    async fn instance<B>(
        self: &Arc<Self>,
        req: hyper::Request<B>,
    ) -> Result<hyper::Response<HyperOutgoingBody>, std::io::Error>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let err = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
        let (mut store, proxy) = match self.take_idle() {
            Some(i) => i,
            None => self.instantiate().await?,
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)
            .map_err(|e| err(&e))?;
        let out = store
            .data_mut()
            .http()
            .new_response_outparam(tx)
            .map_err(|e| err(&e))?;
        // The guest may go on (streaming the body) after the response head is sent.
        let server = self.clone();
        let task = tokio::spawn(async move {
            let result = proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await;
            if result.is_ok() {
                server.give_back((store, proxy));
            }
            result
        });
        match rx.await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(code)) => Err(err(&format!("guest answered with error {code:?}"))),
            Err(_) => match task.await {
                Ok(Ok(())) => Err(err(&"the guest never set a response")),
                Ok(Err(e)) => Err(err(&format!("guest failed: {e:#}"))),
                Err(e) => Err(err(&e)),
            },
        }
    }
}

#[cfg(test)]
mod host_tests {
    use super::default_host;

    #[test]
    fn a_request_naming_no_host_gets_the_address_it_came_in_on() {
        let at = Some("198.18.0.130:8080".parse().unwrap());
        let mut bare = hyper::Request::builder().uri("/x").body(()).unwrap();
        default_host(&mut bare, at);
        assert_eq!(bare.headers()[http::header::HOST], "198.18.0.130:8080");
        let mut named = hyper::Request::builder()
            .uri("/x")
            .header("host", "echo")
            .body(())
            .unwrap();
        default_host(&mut named, at);
        assert_eq!(named.headers()[http::header::HOST], "echo");
    }
}
