//! Leader election against a real API server (in process, on the memory store): one of two
//! candidates works at a time; a candidate that stops releases the Lease and the other takes
//! over at once; one that dies (stops renewing without releasing) is replaced after the lease
//! duration.

use shoal_client::leader::Election;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn election(identity: &str) -> Election {
    Election {
        namespace: "kube-system".into(),
        name: "test-lease".into(),
        identity: identity.into(),
        lease_duration: Duration::from_millis(900),
        renew_deadline: Duration::from_millis(600),
        retry_period: Duration::from_millis(100),
    }
}

/// Counts the candidates working now, and the most that ever worked at once.
#[derive(Default)]
struct Working {
    now: AtomicUsize,
    most: AtomicUsize,
    by: std::sync::Mutex<Vec<String>>,
}

struct Out(Arc<Working>);
impl Drop for Out {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

fn candidate(
    client: &kube::Client,
    identity: &'static str,
    working: &Arc<Working>,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let (client, working, stop) = (client.clone(), working.clone(), stop.clone());
    tokio::spawn(async move {
        election(identity)
            .run(client, stop, move |leading| {
                let working = working.clone();
                async move {
                    let n = working.now.fetch_add(1, Ordering::SeqCst) + 1;
                    working.most.fetch_max(n, Ordering::SeqCst);
                    working.by.lock().unwrap().push(identity.to_owned());
                    // Counted out however the work ends (cancelled, or dropped with its
                    // candidate).
                    let _out = Out(working.clone());
                    leading.cancelled().await;
                }
            })
            .await;
    })
}

async fn holder(client: &kube::Client) -> String {
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(client.clone(), "kube-system");
    leases
        .get_opt("test-lease")
        .await
        .unwrap()
        .and_then(|l| l.spec?.holder_identity)
        .unwrap_or_default()
}

async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_takeover_on_release_or_death() {
    let store = Arc::new(shoal_store::memory::MemoryStore::new());
    let (addr, api_stop) = shoal_apiserver::serve_loopback(store, Default::default())
        .await
        .unwrap();
    let client =
        kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap()))
            .unwrap();
    let working = Arc::new(Working::default());
    let stop_a = CancellationToken::new();
    let a = candidate(&client, "a", &working, &stop_a);
    until("a leads", async || holder(&client).await == "a").await;
    let stop_b = CancellationToken::new();
    let _b = candidate(&client, "b", &working, &stop_b);
    // b waits while a renews.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(holder(&client).await, "a");
    assert_eq!(working.now.load(Ordering::SeqCst), 1);
    // a stops: it releases, and b leads at once (well within a lease duration).
    stop_a.cancel();
    a.await.unwrap();
    let released = tokio::time::Instant::now();
    until("b leads", async || holder(&client).await == "b").await;
    assert!(released.elapsed() < Duration::from_millis(900));
    // c joins, then b dies without releasing: c takes over once the lease expires.
    let stop_c = CancellationToken::new();
    let _c = candidate(&client, "c", &working, &stop_c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    _b.abort();
    until("c leads", async || holder(&client).await == "c").await;
    assert_eq!(working.most.load(Ordering::SeqCst), 1, "never two at once");
    assert_eq!(*working.by.lock().unwrap(), ["a", "b", "c"]);
    stop_c.cancel();
    api_stop.cancel();
}
