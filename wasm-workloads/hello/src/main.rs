//! `hello`: prints a greeting and exits 0.

fn main() {
    let who = std::env::var("NAME").unwrap_or_else(|_| "world".into());
    println!("Hello, {who}! This is a WebAssembly component running on Shoal.");
}
