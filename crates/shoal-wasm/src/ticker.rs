//! The epoch ticker.

use std::time::Duration;
use wasmtime::Engine;

/// Advances `engine`'s epoch every `tick` on its own thread until the engine is dropped.
/// A thread rather than a tokio task: a runtime busy with guests must not delay the tick that
/// makes those guests yield (or meet their deadlines).
pub fn start(engine: &Engine, tick: Duration) {
    let engine = engine.weak();
    std::thread::Builder::new()
        .name("shoal-epoch".into())
        .spawn(move || {
            while let Some(e) = engine.upgrade() {
                e.increment_epoch();
                drop(e);
                std::thread::sleep(tick);
            }
        })
        .expect("spawning the epoch thread");
}
