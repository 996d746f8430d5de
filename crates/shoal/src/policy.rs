//! `shoal policy test|bench`: runs an admission policy offline, with the same host the API
//! server uses, against YAML or JSON files.

use anyhow::{Context, bail};
use serde_json::{Value, json};
use shoal_plugin_host::admission::{self, AdmissionModule, AdmissionRequest, GroupVersionKind};
use shoal_plugin_host::{DEFAULT_MEMORY_LIMIT, Host};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Input {
    /// The policy component (`.wasm`).
    policy: PathBuf,
    /// The policy's settings, as JSON or YAML (or `@FILE`).
    #[arg(long, default_value = "{}")]
    settings: String,
    /// An `admission.k8s.io/v1` AdmissionReview (or its `request`), as YAML or JSON.
    #[arg(long, conflicts_with = "object", required_unless_present = "object")]
    request: Option<PathBuf>,
    /// An object to review as a CREATE (or `--operation`), as YAML or JSON.
    #[arg(long)]
    object: Option<PathBuf>,
    /// The operation for `--object`.
    #[arg(long, default_value = "CREATE")]
    operation: String,
    /// Call the policy's `mutate` (as a policy with `mutating: true`).
    #[arg(long)]
    mutating: bool,
    /// Per call, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
}

#[derive(clap::Subcommand)]
pub enum PolicyCommand {
    /// Runs the policy once and prints its verdict (exit status 0 if allowed, 1 if denied).
    Test(Input),
    /// Runs the policy many times (a fresh instance each) and prints the latency
    /// distribution.
    Bench {
        #[command(flatten)]
        input: Input,
        #[arg(long, default_value_t = 2000)]
        iterations: usize,
    },
}

fn read_doc(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_doc(&text).with_context(|| format!("{} is neither JSON nor YAML", path.display()))
}

fn parse_doc(text: &str) -> anyhow::Result<Value> {
    if let Ok(v) = serde_json::from_str(text) {
        return Ok(v);
    }
    Ok(serde_saphyr::from_str(text)?)
}

fn settings(s: &str) -> anyhow::Result<String> {
    let v = match s.strip_prefix('@') {
        Some(file) => read_doc(Path::new(file))?,
        None => parse_doc(s).context("--settings is neither JSON nor YAML")?,
    };
    Ok(v.to_string())
}

fn s(v: &Value, ptr: &str) -> String {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

/// The request `input` describes.
fn request(input: &Input, settings: &str) -> anyhow::Result<AdmissionRequest> {
    if let Some(path) = &input.request {
        let doc = read_doc(path)?;
        let r = doc.get("request").cloned().unwrap_or(doc);
        let gvk = GroupVersionKind {
            group: s(&r, "/kind/group"),
            version: s(&r, "/kind/version"),
            kind: s(&r, "/kind/kind"),
        };
        if gvk.kind.is_empty() {
            bail!("{}: request.kind.kind is required", path.display());
        }
        let mut req = admission::request(&s(&r, "/operation"), gvk, settings);
        req.uid = s(&r, "/uid");
        req.resource.resource = s(&r, "/resource/resource");
        req.sub_resource = s(&r, "/subResource");
        req.namespace = s(&r, "/namespace");
        req.name = s(&r, "/name");
        req.object = r
            .get("object")
            .filter(|o| !o.is_null())
            .map(Value::to_string);
        req.old_object = r
            .get("oldObject")
            .filter(|o| !o.is_null())
            .map(Value::to_string);
        req.user_info.username = s(&r, "/userInfo/username");
        req.dry_run = r.get("dryRun").and_then(Value::as_bool).unwrap_or(false);
        return Ok(req);
    }
    let path = input
        .object
        .as_ref()
        .context("--request or --object is required")?;
    let o = read_doc(path)?;
    let api_version = s(&o, "/apiVersion");
    let (group, version) = api_version
        .split_once('/')
        .map(|(g, v)| (g.to_owned(), v.to_owned()))
        .unwrap_or((String::new(), api_version.clone()));
    let kind = s(&o, "/kind");
    if kind.is_empty() || version.is_empty() {
        bail!("{}: apiVersion and kind are required", path.display());
    }
    let plural = shoal_api::resources::find_kind(&group, &kind)
        .map(|r| r.plural.to_owned())
        .unwrap_or_else(|| format!("{}s", kind.to_lowercase()));
    let mut req = admission::request(
        &input.operation,
        GroupVersionKind {
            group,
            version,
            kind,
        },
        settings,
    );
    req.resource.resource = plural;
    req.namespace = match s(&o, "/metadata/namespace") {
        ns if ns.is_empty() => "default".into(),
        ns => ns,
    };
    req.name = s(&o, "/metadata/name");
    req.user_info.username = "shoal-admin".into();
    if input.operation == "DELETE" {
        req.old_object = Some(o.to_string());
    } else {
        req.object = Some(o.to_string());
    }
    Ok(req)
}

async fn load(input: &Input) -> anyhow::Result<(AdmissionModule, AdmissionRequest)> {
    let settings = settings(&input.settings)?;
    let bytes = std::fs::read(&input.policy)
        .with_context(|| format!("cannot read {}", input.policy.display()))?;
    let host = Host::new(DEFAULT_MEMORY_LIMIT)?;
    let module = AdmissionModule::load(&host, &bytes, None, &settings).await?;
    Ok((module, request(input, &settings)?))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted
        .get(((sorted.len().max(1) - 1) as f64 * p).round() as usize)
        .copied()
        .unwrap_or_default()
}

pub async fn run(cmd: PolicyCommand) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Test(input) => {
            let (module, req) = load(&input).await?;
            let timeout = Duration::from_millis(input.timeout_ms);
            let v = module.review(&req, input.mutating, timeout).await?;
            let mut out = json!({"allowed": v.allowed});
            if !v.allowed {
                out["code"] = json!(v.code);
                out["message"] = json!(v.message);
            }
            if !v.warnings.is_empty() {
                out["warnings"] = json!(v.warnings);
            }
            if let Some(patch) = &v.patch {
                out["patch"] = patch.clone();
                if let Some(obj) = &req.object {
                    let mut o: Value = serde_json::from_str(obj)?;
                    let p: json_patch::Patch = serde_json::from_value(patch.clone())?;
                    json_patch::patch(&mut o, &p).context("the policy's patch does not apply")?;
                    out["patchedObject"] = o;
                }
            }
            print!("{}", serde_saphyr::to_string(&out)?);
            if !v.allowed {
                std::process::exit(1);
            }
            Ok(())
        }
        PolicyCommand::Bench { input, iterations } => {
            let (module, req) = load(&input).await?;
            let timeout = Duration::from_millis(input.timeout_ms);
            for _ in 0..iterations.min(100) {
                module.review(&req, input.mutating, timeout).await?;
            }
            let mut lat = Vec::with_capacity(iterations);
            let started = Instant::now();
            for _ in 0..iterations {
                let t = Instant::now();
                module.review(&req, input.mutating, timeout).await?;
                lat.push(t.elapsed());
            }
            let total = started.elapsed();
            lat.sort();
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            println!(
                "{iterations} reviews (fresh instance each) in {:.2}s = {:.0}/s",
                total.as_secs_f64(),
                iterations as f64 / total.as_secs_f64()
            );
            println!(
                "latency µs: p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
                us(percentile(&lat, 0.5)),
                us(percentile(&lat, 0.9)),
                us(percentile(&lat, 0.99)),
                us(percentile(&lat, 1.0)),
            );
            Ok(())
        }
    }
}
