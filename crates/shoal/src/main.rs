//! `shoal`: the one binary. `shoal up` runs a single-node control plane; each component also
//! runs alone as a subcommand.

mod kubeconfig;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use shoal_apiserver::tls::Pki;
use shoal_apiserver::{ApiServer, router};
use shoal_store::Store;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// mimalloc: the API server allocates many small JSON values per request; glibc malloc
/// showed up as ~17% of CPU in the create benchmark.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "shoal",
    version,
    about = "Kubernetes-compatible orchestration for WebAssembly workloads"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum StoreKind {
    /// One redb file under the data directory (durable).
    Embedded,
    /// An etcd cluster (`--etcd-endpoints`); several API servers can share it.
    Etcd,
    /// In memory only: everything is lost at exit.
    Memory,
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Where the store, certificates, token and kubeconfig live.
    #[arg(long, env = "SHOAL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address the API server listens on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// The store backend.
    #[arg(long, value_enum, default_value = "embedded")]
    store: StoreKind,
    /// etcd client URLs, comma-separated (with `--store etcd`).
    #[arg(long, value_delimiter = ',', required_if_eq("store", "etcd"))]
    etcd_endpoints: Vec<String>,
    /// CA certificate (PEM) that signed the etcd servers' certificates.
    #[arg(long)]
    etcd_cafile: Option<PathBuf>,
    /// Client certificate (PEM) for etcd.
    #[arg(long, requires = "etcd_keyfile")]
    etcd_certfile: Option<PathBuf>,
    /// Client key (PEM) for etcd.
    #[arg(long, requires = "etcd_certfile")]
    etcd_keyfile: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Start a single-node cluster (on the embedded store unless `--store` says otherwise).
    Up {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Run the API server alone.
    Apiserver {
        #[command(flatten)]
        server: ServerArgs,
    },
}

fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("shoal");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/shoal"),
        None => PathBuf::from("shoal-data"),
    }
}

async fn shutdown_signal(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                token.cancel();
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    token.cancel();
}

async fn open_store(args: &ServerArgs, dir: &std::path::Path) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match args.store {
        StoreKind::Embedded => {
            let path = dir.join("store.redb");
            Arc::new(
                shoal_store::embedded::EmbeddedStore::open(&path)
                    .with_context(|| format!("cannot open the store at {}", path.display()))?,
            )
        }
        StoreKind::Memory => Arc::new(shoal_store::memory::MemoryStore::new()),
        StoreKind::Etcd => {
            let opts = shoal_store::etcd::EtcdOptions {
                endpoints: args.etcd_endpoints.clone(),
                ca_file: args.etcd_cafile.clone(),
                cert_file: args.etcd_certfile.clone(),
                key_file: args.etcd_keyfile.clone(),
            };
            Arc::new(
                shoal_store::etcd::EtcdStore::connect(&opts)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", error_chain(&e)))
                    .with_context(|| {
                        format!("cannot reach etcd at {}", args.etcd_endpoints.join(","))
                    })?,
            )
        }
    })
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

async fn run_apiserver(args: ServerArgs) -> anyhow::Result<()> {
    let dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let store = open_store(&args, &dir).await?;
    let pki = Pki::load_or_create(&dir.join("pki"), &[])
        .context("cannot set up the cluster's certificates")?;
    let server = ApiServer::start(store, Some(pki.token.clone()))
        .await
        .context("cannot start the API server")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let kubeconfig = dir.join("kubeconfig");
    kubeconfig::write(&kubeconfig, addr, &pki.ca_pem, &pki.token)
        .with_context(|| format!("cannot write {}", kubeconfig.display()))?;
    println!("Shoal API server listening on https://{addr}");
    println!("Use it with:  export KUBECONFIG={}", kubeconfig.display());
    println!(
        "         or:  kubectl --kubeconfig {} get namespaces",
        kubeconfig.display()
    );
    let token = CancellationToken::new();
    tokio::spawn(shutdown_signal(token.clone()));
    shoal_apiserver::tls::serve(listener, router(server), Some(pki.server_config), token).await;
    println!("Shoal stopped");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Up { server } | Command::Apiserver { server } => run_apiserver(server).await,
    }
}
