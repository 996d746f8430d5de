//! `exerciser`: a scriptable workload for tests. Its arguments are steps, run in order:
//!
//! `print TEXT`, `env NAME`, `read PATH`, `write PATH TEXT`, `alloc MIB`, `spin SECONDS`,
//! `sleep SECONDS`, `crash`, `exit CODE`, and the network steps `resolve NAME` (each address
//! on its own line), `connect HOST:PORT TEXT` (TCP: sends TEXT, prints the reply until the peer
//! closes), `fetch URL` (a `wasi:http` GET, http or https: the status code on one line, then
//! the body) and `fetch-as TOKEN-FILE URL` (the same with the file's bearer token). A network
//! step that fails ends the run with exit code 2. Benchmarks: `bench-http HOST:PORT N` (N
//! requests, a connection each; prints `ops= rps= p50_us= p99_us=`) and `bench-resolve NAME N`
//! (prints `lookups= per_s=`). With no steps it sleeps forever.

#[cfg(target_os = "wasi")]
mod fetch;
/// Natively (in a container image) there is no `wasi:http` to fetch through.
#[cfg(not(target_os = "wasi"))]
mod fetch {
    pub fn get(_url: &str, _bearer: Option<&str>) -> Result<(u16, String), String> {
        Err("fetch is a wasi:http step; this build is native".into())
    }
}

/// Ends the process with `code`: std reports every failure as 1 on WASI, where
/// wasi:cli/exit@0.2.12 carries the code.
fn exit_with(code: u8) -> ! {
    let _ = std::io::stdout().flush();
    #[cfg(target_os = "wasi")]
    wasip2::cli::exit::exit_with_code(code);
    std::process::exit(code.into())
}

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn number(step: &str, arg: Option<String>) -> Result<f64, String> {
    let arg = arg.ok_or_else(|| format!("{step}: missing argument"))?;
    arg.parse()
        .map_err(|_| format!("{step}: {arg:?} is not a number"))
}

fn text(step: &str, arg: Option<String>) -> Result<String, String> {
    arg.ok_or_else(|| format!("{step}: missing argument"))
}

fn run(mut args: impl Iterator<Item = String>) -> Result<ExitCode, String> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    while let Some(step) = args.next() {
        match step.as_str() {
            "print" => println!("{}", text("print", args.next())?),
            "env" => {
                let name = text("env", args.next())?;
                match std::env::var(&name) {
                    Ok(v) => println!("{name}={v}"),
                    Err(_) => println!("{name} is not set"),
                }
            }
            "read" => {
                let path = text("read", args.next())?;
                let body =
                    std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
                print!("{body}");
                if !body.ends_with('\n') {
                    println!();
                }
            }
            "write" => {
                let path = text("write", args.next())?;
                let body = text("write", args.next())?;
                std::fs::write(&path, body).map_err(|e| format!("write {path}: {e}"))?;
            }
            "alloc" => {
                let mib = number("alloc", args.next())?;
                let bytes = (mib * 1024.0 * 1024.0) as usize;
                // Touch every page so the memory is really used.
                hoard.push(vec![1u8; bytes]);
                println!("allocated {mib} MiB");
            }
            "spin" => {
                let secs = number("spin", args.next())?;
                let until = Instant::now() + Duration::from_secs_f64(secs);
                let mut n = 0u64;
                while Instant::now() < until {
                    n = n.wrapping_add(1);
                    std::hint::black_box(n);
                }
                println!("spun for {secs} s: {n} iterations");
            }
            "sleep" => {
                let secs = number("sleep", args.next())?;
                std::thread::sleep(Duration::from_secs_f64(secs));
            }
            "crash" => {
                let _ = std::io::stdout().flush();
                std::process::abort();
            }
            "exit" => {
                let code = number("exit", args.next())?;
                exit_with(code as u8);
            }
            "resolve" => {
                use std::net::ToSocketAddrs;
                let name = text("resolve", args.next())?;
                let addrs = (name.as_str(), 0)
                    .to_socket_addrs()
                    .map_err(|e| format!("resolve {name}: {e}"))?;
                for a in addrs {
                    println!("{}", a.ip());
                }
            }
            "connect" => {
                let target = text("connect", args.next())?;
                let body = text("connect", args.next())?;
                let mut conn = std::net::TcpStream::connect(target.as_str())
                    .map_err(|e| format!("connect {target}: {e}"))?;
                conn.write_all(body.as_bytes())
                    .map_err(|e| format!("connect {target}: send: {e}"))?;
                // Read until the peer closes: an answer may arrive in several segments.
                // An error after some bytes (a reset after a TLS alert) ends the answer.
                let mut got = Vec::new();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(_) if !got.is_empty() => break,
                        Err(e) => return Err(format!("connect {target}: receive: {e}")),
                    }
                }
                println!("{}", String::from_utf8_lossy(&got).trim_end());
            }
            "fetch" | "fetch-as" => {
                // `fetch-as TOKEN-FILE URL` sends the file's token as a bearer token.
                let bearer = match step.as_str() {
                    "fetch-as" => {
                        let file = text("fetch-as", args.next())?;
                        Some(
                            std::fs::read_to_string(&file)
                                .map_err(|e| format!("fetch-as: read {file}: {e}"))?,
                        )
                    }
                    _ => None,
                };
                let url = text("fetch", args.next())?;
                let (status, body) =
                    fetch::get(&url, bearer.as_deref()).map_err(|e| format!("fetch {url}: {e}"))?;
                println!("{status}");
                print!("{body}");
                if !body.ends_with('\n') {
                    println!();
                }
            }
            "bench-http" => {
                let target = text("bench-http", args.next())?;
                let n = number("bench-http", args.next())? as usize;
                let mut times = Vec::with_capacity(n);
                let started = Instant::now();
                for _ in 0..n {
                    let t = Instant::now();
                    let mut conn = std::net::TcpStream::connect(target.as_str())
                        .map_err(|e| format!("bench-http {target}: {e}"))?;
                    conn.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                        .map_err(|e| format!("bench-http {target}: {e}"))?;
                    let mut sink = Vec::new();
                    conn.read_to_end(&mut sink)
                        .map_err(|e| format!("bench-http {target}: {e}"))?;
                    times.push(t.elapsed());
                }
                let total = started.elapsed();
                times.sort();
                let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize].as_micros();
                println!(
                    "ops={n} rps={:.0} p50_us={} p99_us={}",
                    n as f64 / total.as_secs_f64(),
                    pct(0.5),
                    pct(0.99)
                );
            }
            "bench-resolve" => {
                use std::net::ToSocketAddrs;
                let name = text("bench-resolve", args.next())?;
                let n = number("bench-resolve", args.next())? as usize;
                let started = Instant::now();
                for _ in 0..n {
                    (name.as_str(), 0)
                        .to_socket_addrs()
                        .map_err(|e| format!("bench-resolve {name}: {e}"))?;
                }
                println!(
                    "lookups={n} per_s={:.0}",
                    n as f64 / started.elapsed().as_secs_f64()
                );
            }
            other => return Err(format!("unknown step {other:?}")),
        }
        let _ = std::io::stdout().flush();
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    match run(args.into_iter()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("exerciser: {e}");
            exit_with(2)
        }
    }
}
