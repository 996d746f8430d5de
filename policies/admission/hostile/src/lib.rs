//! Hostile fixture: misbehaves on purpose so tests can prove the sandbox. Settings:
//! `{"behaviour": "loop" | "allocate" | "trap" | "allow"}` (`loop` by default). Settings are
//! read on every request, so `validate-settings` accepts everything.

use serde::Deserialize;
use shoal_plugin_sdk::admission::{Policy, Request, Response};

#[derive(Deserialize)]
#[serde(default)]
struct Settings {
    behaviour: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            behaviour: "loop".into(),
        }
    }
}

struct Hostile;

impl Policy for Hostile {
    type Settings = Settings;

    fn validate(_req: &Request, s: &Settings) -> Response {
        match s.behaviour.as_str() {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "allocate" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "trap" => panic!("hostile fixture traps on purpose"),
            _ => Response::allow(),
        }
    }
}

shoal_plugin_sdk::admission_policy!(Hostile);
