//! Runs the conformance suite against every backend: memory, embedded, and a real etcd
//! started per test on free loopback ports.

mod memory {
    use shoal_store::conformance::Fixture;
    use std::sync::Arc;
    shoal_store::store_conformance!(async {
        Fixture {
            store: Arc::new(shoal_store::memory::MemoryStore::new()),
            guard: Box::new(()),
        }
    });
}

mod embedded {
    use shoal_store::conformance::Fixture;
    use std::sync::Arc;
    shoal_store::store_conformance!(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = shoal_store::embedded::EmbeddedStore::open(&dir.path().join("store.redb"))
            .expect("open");
        Fixture {
            store: Arc::new(store),
            guard: Box::new(dir),
        }
    });
}

mod etcd {
    use shoal_store::conformance::Fixture;
    use shoal_store::etcd::{EtcdOptions, EtcdStore};
    use std::sync::Arc;
    shoal_store::store_conformance!(async {
        let etcd = tokio::task::spawn_blocking(shoal_testkit::etcd::Etcd::start)
            .await
            .expect("join")
            .expect("etcd starts");
        let store = EtcdStore::connect(&EtcdOptions {
            endpoints: etcd.endpoints(),
            ..Default::default()
        })
        .await
        .expect("connect to etcd");
        Fixture {
            store: Arc::new(store),
            guard: Box::new(etcd),
        }
    });
}

mod embedded_durability {
    use shoal_store::embedded::EmbeddedStore;
    use shoal_store::{RangeRequest, Revision, Store, Txn};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reopened_store_keeps_every_acknowledged_write_and_continues_the_revision() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        {
            let s = EmbeddedStore::open(&path).unwrap();
            let writes: Vec<_> = (0..200)
                .map(|i| {
                    let s = s.clone();
                    tokio::spawn(async move {
                        s.txn(Txn::new().put(format!("/d/{i:03}"), "v"))
                            .await
                            .unwrap()
                    })
                })
                .collect();
            for w in writes {
                assert!(w.await.unwrap().succeeded);
            }
        }
        // The writer thread of the first handle exits once its queue is dropped; redb allows
        // one open handle per file, so wait for it.
        let s = loop {
            match EmbeddedStore::open(&path) {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        };
        assert_eq!(s.current_revision().await.unwrap(), Revision(200));
        assert_eq!(
            s.range(RangeRequest::prefix("/d/")).await.unwrap().count,
            200
        );
        let r = s.txn(Txn::new().put("/d/next", "v")).await.unwrap();
        assert_eq!(r.revision, Revision(201));
    }
}
