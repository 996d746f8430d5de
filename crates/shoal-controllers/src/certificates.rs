//! CertificateSigningRequests, as Kubernetes' csrapproving and csrsigning controllers handle
//! them, and the bootstrap tokens that start them (its tokencleaner).
//!
//! - **Approval**: a request to the `kubernetes.io/kube-apiserver-client-kubelet` signer that
//!   is a node client certificate (`system:node:NAME` in `system:nodes`, client usages, no
//!   alternative names) is approved when its requester may `create`
//!   `certificatesigningrequests/nodeclient` (a bootstrap token), or
//!   `certificatesigningrequests/selfnodeclient` for its own name (a node renewing), as a
//!   SubjectAccessReview says. Anything else waits for `kubectl certificate approve`.
//! - **Signing**: an approved request to `kubernetes.io/kube-apiserver-client` or
//!   `kubernetes.io/kube-apiserver-client-kubelet` is signed with the cluster CA, valid for
//!   its `expirationSeconds` (at most the signing duration, never past the CA); one the signer
//!   refuses gets a `Failed` condition saying why.
//! - **Token cleaning**: a bootstrap token Secret whose `expiration` has passed is deleted.

use crate::Error;
use crate::runner::Ctx;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use std::sync::Arc;
use std::time::Duration;

/// The cluster CA the signer signs with (`--cluster-signing-cert-file`, `-key-file`).
#[derive(Clone, Debug)]
pub struct Signing {
    pub ca_pem: String,
    pub key_pem: String,
    /// The longest a certificate is valid (`--cluster-signing-duration`; Kubernetes: a year).
    pub duration: Duration,
}

fn has(csr: &CertificateSigningRequest, kind: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == kind))
}

fn condition(kind: &str, reason: &str, message: String) -> CertificateSigningRequestCondition {
    let now = Time(jiff::Timestamp::now());
    CertificateSigningRequestCondition {
        type_: kind.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

/// The request's subject, if it parses.
fn request(csr: &CertificateSigningRequest) -> Option<shoal_pki::Request> {
    shoal_pki::parse_request(&csr.spec.request.0).ok()
}

/// Runs the approving and, given a CA, the signing controller (forever).
pub async fn run(client: kube::Client, signing: Option<Signing>) {
    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    let signer = match signing {
        None => None,
        Some(s) => match shoal_pki::Signer::new(&s.ca_pem, &s.key_pem) {
            Ok(signer) => Some((Arc::new(signer), s.duration)),
            Err(e) => {
                tracing::error!(error = %e, "cannot load the cluster signing CA: requests are approved but not signed");
                None
            }
        },
    };
    let controller = Controller::new(csrs, watcher::Config::default());
    crate::runner::run("csr", client, controller, move |csr, ctx| {
        reconcile(csr, ctx, signer.clone())
    })
    .await;
}

async fn reconcile(
    csr: Arc<CertificateSigningRequest>,
    ctx: Arc<Ctx>,
    signer: Option<(Arc<shoal_pki::Signer>, Duration)>,
) -> Result<Action, Error> {
    let Some(name) = csr.metadata.name.clone() else {
        return Ok(Action::await_change());
    };
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    if !has(&csr, "Approved") && !has(&csr, "Denied") {
        if let Some(message) = auto_approval(&ctx.client, &csr).await? {
            let mut approved = (*csr).clone();
            let status = approved.status.get_or_insert_with(Default::default);
            status
                .conditions
                .get_or_insert_with(Vec::new)
                .push(condition("Approved", "AutoApproved", message));
            match api
                .replace_subresource("approval", &name, &PostParams::default(), &approved)
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(Action::await_change());
    }
    let issued = csr
        .status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty());
    let signer_name = csr.spec.signer_name.as_str();
    let ours =
        signer_name == shoal_pki::CLIENT_SIGNER || signer_name == shoal_pki::KUBELET_CLIENT_SIGNER;
    let Some((signer, longest)) =
        signer.filter(|_| ours && has(&csr, "Approved") && !has(&csr, "Failed") && !issued)
    else {
        return Ok(Action::await_change());
    };
    let mut signed = (*csr).clone();
    let status = signed.status.get_or_insert_with(Default::default);
    let usages = csr.spec.usages.clone().unwrap_or_default();
    let checked = match request(&csr) {
        None => Err("the request does not parse".to_owned()),
        Some(req) if signer_name == shoal_pki::KUBELET_CLIENT_SIGNER => {
            shoal_pki::check_kubelet_client(&req, &usages)
        }
        Some(req) => shoal_pki::check_client(&req, &usages),
    };
    let lifetime = csr
        .spec
        .expiration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(longest, |s| Duration::from_secs(s).min(longest));
    match checked.and_then(|()| {
        signer
            .sign(&csr.spec.request.0, &usages, lifetime)
            .map_err(|e| e.to_string())
    }) {
        Ok(pem) => {
            status.certificate = Some(k8s_openapi::ByteString(pem.into_bytes()));
        }
        Err(why) => {
            status
                .conditions
                .get_or_insert_with(Vec::new)
                .push(condition("Failed", "SignerValidationFailure", why));
        }
    }
    match api
        .replace_status(&name, &PostParams::default(), &signed)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

/// Why a kubelet client request is approved without a human, if it is.
async fn auto_approval(
    client: &kube::Client,
    csr: &CertificateSigningRequest,
) -> Result<Option<String>, Error> {
    if csr.spec.signer_name != shoal_pki::KUBELET_CLIENT_SIGNER {
        return Ok(None);
    }
    let usages = csr.spec.usages.clone().unwrap_or_default();
    let Some(req) = request(csr).filter(|r| shoal_pki::check_kubelet_client(r, &usages).is_ok())
    else {
        return Ok(None);
    };
    let requester = csr.spec.username.clone().unwrap_or_default();
    let asks = [
        (
            req.common_name == requester,
            "selfnodeclient",
            "Auto approving self kubelet client certificate after SubjectAccessReview.",
        ),
        (
            true,
            "nodeclient",
            "Auto approving kubelet client certificate after SubjectAccessReview.",
        ),
    ];
    for (applies, subresource, message) in asks {
        if applies && may_create(client, csr, subresource).await? {
            return Ok(Some(message.to_owned()));
        }
    }
    Ok(None)
}

/// Whether the requester may create `certificatesigningrequests/SUBRESOURCE`.
async fn may_create(
    client: &kube::Client,
    csr: &CertificateSigningRequest,
    subresource: &str,
) -> Result<bool, Error> {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: csr.spec.username.clone(),
            groups: csr.spec.groups.clone(),
            uid: csr.spec.uid.clone(),
            extra: csr.spec.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some("certificates.k8s.io".into()),
                resource: Some("certificatesigningrequests".into()),
                subresource: Some(subresource.into()),
                verb: Some("create".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// Deletes bootstrap token Secrets once they expire (forever).
pub async fn run_token_cleaner(client: kube::Client) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "kube-system");
    let controller = Controller::new(
        secrets,
        watcher::Config::default().fields("type=bootstrap.kubernetes.io/token"),
    );
    crate::runner::run("tokencleaner", client, controller, clean).await;
}

async fn clean(secret: Arc<Secret>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(expiration) = secret
        .data
        .as_ref()
        .and_then(|d| d.get("expiration"))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
    else {
        return Ok(Action::await_change());
    };
    let left = expiration
        .parse::<jiff::Timestamp>()
        .ok()
        .and_then(|t| t.duration_since(jiff::Timestamp::now()).try_into().ok())
        .unwrap_or(Duration::ZERO);
    if !left.is_zero() {
        return Ok(Action::requeue(left));
    }
    let name = secret.metadata.name.clone().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), "kube-system");
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

/// A new bootstrap token (`ID.SECRET`) and the Secret that makes it one, valid for `ttl`,
/// in `system:bootstrappers` plus `extra_groups` (each `system:bootstrappers:...`).
pub fn new_bootstrap_token(ttl: Duration, extra_groups: &[String]) -> (String, Secret) {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let mut pick = |n: usize| -> String {
        (0..n)
            .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
            .collect()
    };
    let (id, secret) = (pick(6), pick(16));
    let expiration = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::try_from(ttl).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(jiff::Timestamp::MAX)
        .round(jiff::Unit::Second)
        .unwrap_or(jiff::Timestamp::MAX);
    let mut data = std::collections::BTreeMap::from([
        ("token-id".to_owned(), id.clone()),
        ("token-secret".to_owned(), secret.clone()),
        ("expiration".to_owned(), expiration.to_string()),
        ("usage-bootstrap-authentication".to_owned(), "true".into()),
        ("usage-bootstrap-signing".to_owned(), "true".into()),
        (
            "description".to_owned(),
            "Made by `shoal bootstrap-token` for a kubelet to join the cluster.".into(),
        ),
    ]);
    if !extra_groups.is_empty() {
        data.insert("auth-extra-groups".into(), extra_groups.join(","));
    }
    let secret_obj = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("bootstrap-token-{id}")),
            namespace: Some("kube-system".into()),
            ..Default::default()
        },
        type_: Some("bootstrap.kubernetes.io/token".into()),
        string_data: Some(data),
        ..Default::default()
    };
    (format!("{id}.{secret}"), secret_obj)
}
