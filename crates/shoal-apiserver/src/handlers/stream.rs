//! List responses written item by item. A LIST holds only its snapshot (a vector of shared,
//! already-encoded cache objects); the body is assembled in chunks of about [`CHUNK`] bytes as
//! the connection asks for them, so 200 concurrent LISTs of 40 MB cost 200 snapshots, not
//! 8 GB of response buffers, and a reader that stops reading stops the writing. The bytes are
//! exactly those of the whole response assembled at once.
//!
//! Writing list bodies is CPU-bound (copies into the socket); like kube-apiserver's priority
//! and fairness, a few list bodies are written at a time (a *seat* each, [`list_seats`]) and
//! the others wait their turn holding only their snapshot, so small requests (a GET, a watch
//! event) are not queued behind hundreds of busy streams; a list that fits in one chunk needs
//! no seat. A reader that takes no chunk for [`SEAT_IDLE`] gives its seat up and queues again
//! when it reads on.

use super::*;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a list body may go without its reader taking a chunk before it loses its seat.
pub(super) const SEAT_IDLE: Duration = Duration::from_secs(1);

/// The seats for list bodies being written: two per core.
pub(crate) fn list_seats() -> Arc<Semaphore> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    Arc::new(Semaphore::new(2 * cores))
}

/// A list body's seat, held while it is being read and taken away by [`watch_seat`] when it
/// is not.
struct Seat {
    permit: Mutex<Option<OwnedSemaphorePermit>>,
    /// Milliseconds since `epoch` of the last chunk taken.
    last: AtomicU64,
    epoch: Instant,
}

impl Seat {
    fn new() -> Arc<Self> {
        Arc::new(Seat {
            permit: Mutex::new(None),
            last: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<OwnedSemaphorePermit>> {
        self.permit.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a seat unless this body holds one.
    async fn hold(&self, seats: &Arc<Semaphore>) {
        self.last
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        if self.slot().is_some() {
            return;
        }
        if let Ok(p) = seats.clone().acquire_owned().await {
            *self.slot() = Some(p);
        }
        self.last
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// Takes the seat from a body whose reader has not taken a chunk for [`SEAT_IDLE`]; ends
/// with the body.
async fn watch_seat(seat: std::sync::Weak<Seat>) {
    loop {
        tokio::time::sleep(SEAT_IDLE / 2).await;
        let Some(seat) = seat.upgrade() else { return };
        let idle = seat.epoch.elapsed().as_millis() as u64 - seat.last.load(Ordering::Relaxed);
        if idle > SEAT_IDLE.as_millis() as u64 {
            seat.slot().take();
        }
    }
}

/// About how much of a list is assembled before it is handed to the connection.
pub(super) const CHUNK: usize = 64 * 1024;

/// How one item is written into the body.
pub(super) type Encode = Box<dyn FnMut(&CachedObject, &mut Vec<u8>) + Send>;

/// A list body: `head`, the items separated by commas, `tail`; produced lazily.
pub(super) struct Chunks {
    head: Option<Vec<u8>>,
    items: std::vec::IntoIter<Arc<CachedObject>>,
    encode: Encode,
    tail: Option<&'static [u8]>,
    first: bool,
    /// The items' JSON fits in one chunk (a Table row is smaller than its object): such a
    /// list is written at once, without waiting for a seat.
    small: bool,
}

impl Chunks {
    pub(super) fn new(head: Vec<u8>, items: Vec<Arc<CachedObject>>, encode: Encode) -> Self {
        Chunks {
            small: items.iter().map(|o| o.json.len() + 1).sum::<usize>() <= CHUNK,
            head: Some(head),
            items: items.into_iter(),
            encode,
            tail: Some(b"]}\n"),
            first: true,
        }
    }

    /// The next chunk: whatever is left of the head, then items until the chunk is full, then
    /// the tail once the items are done.
    fn next_chunk(&mut self) -> Option<Bytes> {
        let mut out = self.head.take().unwrap_or_default();
        out.reserve(CHUNK);
        while out.len() < CHUNK {
            let Some(o) = self.items.next() else {
                if let Some(t) = self.tail.take() {
                    out.extend_from_slice(t);
                }
                break;
            };
            if !self.first {
                out.push(b',');
            }
            self.first = false;
            (self.encode)(&o, &mut out);
        }
        (!out.is_empty()).then(|| Bytes::from(out))
    }

    /// Everything at once (what the streamed body adds up to).
    #[cfg(test)]
    pub(super) fn collect(mut self) -> Vec<u8> {
        let mut all = Vec::new();
        while let Some(c) = self.next_chunk() {
            all.extend_from_slice(&c);
        }
        all
    }
}

/// A 200 with a JSON body streamed from `chunks`, each chunk written holding one of `seats`.
pub(super) fn streamed(mut chunks: Chunks, seats: &Arc<Semaphore>) -> Response {
    if chunks.small {
        let mut all = Vec::new();
        while let Some(c) = chunks.next_chunk() {
            all.extend_from_slice(&c);
        }
        return json_body(StatusCode::OK, Body::from(all));
    }
    let seat = Seat::new();
    tokio::spawn(watch_seat(Arc::downgrade(&seat)));
    let state = (chunks, seat, seats.clone());
    let body = futures::stream::unfold(state, |(mut chunks, seat, seats)| async move {
        seat.hold(&seats).await;
        let chunk = chunks.next_chunk()?;
        Some((Ok::<_, Infallible>(chunk), (chunks, seat, seats)))
    });
    json_body(StatusCode::OK, Body::from_stream(body))
}

/// The head of a list of `info`'s kind: everything up to the first item.
pub(super) fn list_head(info: &ResourceInfo, list_meta: &Value) -> Vec<u8> {
    let mut head = format!(
        "{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":",
        info.list_kind(),
        info.api_version()
    )
    .into_bytes();
    head.extend_from_slice(&serde_json::to_vec(list_meta).unwrap_or_default());
    head.extend_from_slice(b",\"items\":[");
    head
}

/// The head of a Table of `info`'s kind, with its column definitions.
pub(super) fn table_head(info: &ResourceInfo, list_meta: Value) -> Vec<u8> {
    // The same Table with no rows, cut before its empty `rows` array closes.
    let empty = table::table(info, &[], IncludeObject::None, list_meta, true);
    let mut head = serde_json::to_vec(&empty).unwrap_or_default();
    debug_assert!(head.ends_with(b"\"rows\":[]}"));
    head.truncate(head.len() - 2);
    head
}

/// Writes each object's cached JSON (as served through `info`'s version).
pub(super) fn json_items(info: &'static ResourceInfo) -> Encode {
    if crate::crd::custom(info).is_some() || crate::conversion::converts(info) {
        return Box::new(move |o, out| {
            out.extend_from_slice(&crate::conversion::served_bytes(info, &o.json))
        });
    }
    Box::new(|o, out| out.extend_from_slice(&o.json))
}

/// Writes each object's Table row.
pub(super) fn table_rows(info: &'static ResourceInfo, include: IncludeObject) -> Encode {
    let now = table::now_secs();
    Box::new(move |o, out| {
        let row = o.with_value(|v| table::row(info, v, include, now));
        let _ = serde_json::to_writer(&mut *out, &row);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn objects(n: usize) -> Vec<Arc<CachedObject>> {
        (0..n)
            .map(|i| {
                let o = json!({"kind": "ConfigMap", "apiVersion": "v1",
                    "metadata": {"name": format!("c{i}"), "namespace": "d", "uid": format!("u{i}"),
                        "creationTimestamp": "2026-01-01T00:00:00Z"},
                    "data": {"k": "v".repeat(500)}});
                let bytes = crate::cache::encode_stored(&o);
                Arc::new(CachedObject::decode(&format!("/c{i}"), &bytes, i as i64 + 1).unwrap())
            })
            .collect()
    }

    fn info() -> &'static ResourceInfo {
        shoal_api::resources::find("", "v1", "configmaps").unwrap()
    }

    #[test]
    fn a_streamed_list_is_the_bytes_of_the_whole_list() {
        for n in [0, 1, 3, 500] {
            let objs = objects(n);
            let meta = json!({"resourceVersion": "42"});
            let streamed =
                Chunks::new(list_head(info(), &meta), objs.clone(), json_items(info())).collect();
            // The list as it used to be assembled in one buffer.
            let mut whole = br#"{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"42"},"items":["#.to_vec();
            for (i, o) in objs.iter().enumerate() {
                if i > 0 {
                    whole.push(b',');
                }
                whole.extend_from_slice(&o.json);
            }
            whole.extend_from_slice(b"]}\n");
            assert_eq!(streamed, whole, "{n} items");
        }
    }

    #[test]
    fn a_streamed_table_is_the_bytes_of_the_whole_table() {
        for n in [0, 1, 300] {
            let objs = objects(n);
            let meta = json!({"resourceVersion": "7"});
            for include in [
                IncludeObject::None,
                IncludeObject::Metadata,
                IncludeObject::Object,
            ] {
                let streamed = Chunks::new(
                    table_head(info(), meta.clone()),
                    objs.clone(),
                    table_rows(info(), include),
                )
                .collect();
                let values: Vec<&Value> = objs.iter().map(|o| o.value()).collect();
                let mut whole =
                    serde_json::to_vec(&table::table(info(), &values, include, meta.clone(), true))
                        .unwrap();
                whole.push(b'\n');
                assert_eq!(
                    String::from_utf8(streamed).unwrap(),
                    String::from_utf8(whole).unwrap(),
                    "{n} rows, {include:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_reader_that_stops_reading_stops_the_encoding() {
        let objs = objects(10_000);
        let encoded = Arc::new(AtomicUsize::new(0));
        let counter = encoded.clone();
        let encode: Encode = Box::new(move |o, out| {
            counter.fetch_add(1, Ordering::Relaxed);
            out.extend_from_slice(&o.json);
        });
        let resp = streamed(Chunks::new(b"[".to_vec(), objs, encode), &list_seats());
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert!(
            first.len() >= CHUNK && first.len() < CHUNK + 1024,
            "{}",
            first.len()
        );
        let after_one = encoded.load(Ordering::Relaxed);
        // About one chunk's worth of the 10,000 items (~6 MB) was encoded, no more.
        assert!(after_one < 200, "{after_one} items encoded for one chunk");
        tokio::task::yield_now().await;
        assert_eq!(encoded.load(Ordering::Relaxed), after_one);
        drop(body);
        assert_eq!(encoded.load(Ordering::Relaxed), after_one);
    }
}

#[cfg(test)]
mod seat_tests {
    use super::*;
    use http_body_util::BodyExt;

    fn big() -> Vec<Arc<CachedObject>> {
        (0..400)
            .map(|i| {
                let o = json!({"metadata": {"name": format!("c{i}"), "uid": "u"}, "data": {"k": "v".repeat(1000)}});
                Arc::new(CachedObject::decode("/k", &crate::cache::encode_stored(&o), 1).unwrap())
            })
            .collect()
    }

    async fn read_all(body: Body) -> usize {
        body.collect().await.unwrap().to_bytes().len()
    }

    #[tokio::test]
    async fn a_stalled_reader_gives_its_seat_to_the_next_list() {
        let seats = Arc::new(Semaphore::new(1));
        let stalled = streamed(
            Chunks::new(
                b"[".to_vec(),
                big(),
                json_items(shoal_api::resources::find("", "v1", "configmaps").unwrap()),
            ),
            &seats,
        );
        let mut stalled = stalled.into_body();
        // The first list takes the only seat, reads one chunk and stops reading.
        stalled.frame().await.unwrap().unwrap();
        assert_eq!(seats.available_permits(), 0);
        // A small list needs no seat: it is answered at once.
        let small = streamed(
            Chunks::new(
                b"[".to_vec(),
                big()[..3].to_vec(),
                json_items(shoal_api::resources::find("", "v1", "configmaps").unwrap()),
            ),
            &seats,
        );
        assert!(read_all(small.into_body()).await > 3000);
        // The second waits for the seat, then gets it once the first has idled too long.
        let next = streamed(
            Chunks::new(
                b"[".to_vec(),
                big(),
                json_items(shoal_api::resources::find("", "v1", "configmaps").unwrap()),
            ),
            &seats,
        );
        let started = Instant::now();
        let n = tokio::time::timeout(Duration::from_secs(10), read_all(next.into_body()))
            .await
            .expect("the second list completes");
        assert!(n > 400_000, "{n}");
        assert!(started.elapsed() >= SEAT_IDLE, "{:?}", started.elapsed());
        // The stalled reader queues again when it reads on, and finishes.
        let rest = tokio::time::timeout(Duration::from_secs(10), read_all(stalled))
            .await
            .expect("the first list completes too");
        assert!(rest > 300_000, "{rest}");
        assert_eq!(seats.available_permits(), 1);
    }
}
