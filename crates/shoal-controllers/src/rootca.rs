//! The `kube-root-ca.crt` ConfigMap of every namespace, as Kubernetes' root-ca-cert-publisher
//! keeps it: the cluster CA (`ca.crt`) pods use to trust the API server, created when a
//! namespace appears and put back when deleted or changed.

use crate::Error;
use crate::runner::Ctx;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use std::collections::BTreeMap;
use std::sync::Arc;

pub const NAME: &str = "kube-root-ca.crt";

/// Runs the publisher (forever) for `ca` (PEM); without a CA there is nothing to publish.
pub async fn run(client: kube::Client, ca: Option<String>) {
    let Some(ca) = ca else {
        std::future::pending::<()>().await;
        return;
    };
    let ca: Arc<str> = ca.into();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let maps: Api<ConfigMap> = Api::all(client.clone());
    let controller = Controller::new(namespaces, watcher::Config::default()).watches(
        maps,
        watcher::Config::default().fields(&format!("metadata.name={NAME}")),
        |cm: ConfigMap| {
            let ns = cm.metadata.namespace.clone()?;
            Some(ObjectRef::new(&ns))
        },
    );
    crate::runner::run(
        "root-ca-cert-publisher",
        client,
        controller,
        move |ns, ctx| reconcile(ns, ctx, ca.clone()),
    )
    .await;
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>, ca: Arc<str>) -> Result<Action, Error> {
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    let Some(name) = ns.metadata.name.as_deref().filter(|_| !terminating) else {
        return Ok(Action::await_change());
    };
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), name);
    let want = BTreeMap::from([("ca.crt".to_owned(), ca.to_string())]);
    let result = match api.get_opt(NAME).await? {
        Some(cm) if cm.data.as_ref() == Some(&want) => return Ok(Action::await_change()),
        Some(mut cm) => {
            cm.data = Some(want);
            cm.binary_data = None;
            api.replace(NAME, &PostParams::default(), &cm)
                .await
                .map(|_| ())
        }
        None => {
            let cm = ConfigMap {
                metadata: kube::api::ObjectMeta {
                    name: Some(NAME.into()),
                    annotations: Some(BTreeMap::from([(
                        "kubernetes.io/description".to_owned(),
                        "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.".to_owned(),
                    )])),
                    ..Default::default()
                },
                data: Some(want),
                ..Default::default()
            };
            api.create(&PostParams::default(), &cm).await.map(|_| ())
        }
    };
    match result {
        Ok(()) => {}
        // Changed meanwhile (we are called again), or the namespace began terminating.
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 403 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}
