//! Hostile fixture for the scheduler world: misbehaves on purpose, in `filter` (or in
//! `pre-filter` with `"point": "pre-filter"`), so tests can prove that a plugin cannot hurt
//! the scheduler. Settings: `{"behaviour": B}` with B one of
//! - `allow`: a well-behaved filter that lets every node through;
//! - `print`: writes one line to stderr, then allows (a benign plugin that logs);
//! - `panic`: panics (the message goes to stderr);
//! - `trap`: executes `unreachable` without a word;
//! - `loop`: never returns;
//! - `allocate`: allocates until the memory cap stops it;
//! - `stack`: recurses until its stack (in linear memory) overflows;
//! - `flood`: writes 10,000 lines to stderr, then allows;
//! - `malformed`: answers for one node more than it was given;
//! - `slow`: spins for `iterations` rounds (to finish just under a deadline), then allows.

use serde::Deserialize;
use shoal_plugin_sdk::scheduler::bindings::Guest;
use shoal_plugin_sdk::scheduler::{Nodes, Pod};
use std::sync::OnceLock;

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    behaviour: String,
    point: String,
    iterations: u64,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

fn settings() -> &'static Settings {
    SETTINGS.get_or_init(Settings::default)
}

/// Recurses without end (the guard is never false: the depth cannot reach `u64::MAX`).
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 64]);
    if std::hint::black_box(depth) == u64::MAX {
        return 0;
    }
    recurse(depth + 1).wrapping_add(frame[(depth % 64) as usize])
}

/// Runs the configured misbehaviour; returns how many answers to give for `n` nodes.
fn misbehave(n: u32) -> usize {
    let s = settings();
    match s.behaviour.as_str() {
        "print" => eprintln!("hostile plugin looked at {n} nodes"),
        "panic" => panic!("hostile scheduler plugin panics on purpose"),
        "trap" => core::arch::wasm32::unreachable(),
        "loop" => {
            let mut i: u64 = 0;
            loop {
                i = std::hint::black_box(i.wrapping_add(1));
            }
        }
        "allocate" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "stack" => {
            std::hint::black_box(recurse(0));
        }
        "flood" => {
            for i in 0..10_000 {
                eprintln!("hostile plugin flood line {i}");
            }
        }
        "malformed" => return n as usize + 1,
        "slow" => {
            let mut x: u64 = 0;
            for i in 0..s.iterations {
                x = std::hint::black_box(x.wrapping_add(i));
            }
        }
        _ => {}
    }
    n as usize
}

struct Hostile;

impl Guest for Hostile {
    fn init(settings: String) -> Result<(), String> {
        let s: Settings = shoal_plugin_sdk::parse_settings(&settings)?;
        let _ = SETTINGS.set(s);
        Ok(())
    }

    fn pre_filter(_pod: &Pod) -> Result<(), String> {
        if settings().point == "pre-filter" {
            misbehave(0);
        }
        Ok(())
    }

    fn filter(_pod: &Pod, nodes: &Nodes) -> Vec<Option<String>> {
        let n = nodes.len();
        let answers = if settings().point == "pre-filter" {
            n as usize
        } else {
            misbehave(n)
        };
        vec![None; answers]
    }

    fn score(_pod: &Pod, nodes: &Nodes) -> Vec<i64> {
        vec![0; nodes.len() as usize]
    }

    fn normalize(_scores: Vec<i64>) -> Option<Vec<i64>> {
        None
    }
}

shoal_plugin_sdk::scheduler::bindings::export_scheduler!(Hostile with_types_in shoal_plugin_sdk::scheduler::bindings);
