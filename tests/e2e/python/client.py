"""Drives a Shoal cluster with the official Kubernetes Python client (a second, non-kubectl
client): create, list, watch with `watch=True`, server-side apply with `force=True`, follow
logs, typed reads of fresh DaemonSets, StatefulSets and ReplicaSets, a Status error.

Usage: client.py KUBECONFIG. Exits non-zero with the failed check on stderr.
"""
import sys
import threading
import time

from kubernetes import client, config, dynamic, watch
from kubernetes.client.rest import ApiException

NS = "py"


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok: {what}", flush=True)


def main(kubeconfig):
    api_client = config.new_client_from_config(config_file=kubeconfig)
    core = client.CoreV1Api(api_client)
    apps = client.AppsV1Api(api_client)

    version = client.VersionApi(api_client).get_code()
    check(version.git_version.startswith("v1."), f"/version answers ({version.git_version})")

    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))

    # Create and list, typed.
    cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="first", labels={"t": "py"}), data={"k": "v"})
    created = core.create_namespaced_config_map(NS, cm)
    check(created.metadata.uid and created.data == {"k": "v"}, "create a ConfigMap")
    listed = core.list_namespaced_config_map(NS, label_selector="t=py")
    check([c.metadata.name for c in listed.items] == ["first"], "list by label selector")

    # A Status error comes back as Kubernetes shapes it.
    try:
        core.read_namespaced_config_map("missing", NS)
        check(False, "a missing ConfigMap is 404")
    except ApiException as e:
        check(e.status == 404 and '"reason":"NotFound"' in e.body, "a missing ConfigMap is 404 NotFound")

    # Watch: the client sends `watch=True`; it must get a stream of events, not a list.
    w = watch.Watch()
    seen = []

    def later():
        time.sleep(1)
        core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="second")))

    threading.Thread(target=later, daemon=True).start()
    for ev in w.stream(core.list_namespaced_config_map, NS, timeout_seconds=20):
        seen.append((ev["type"], ev["object"].metadata.name))
        if ("ADDED", "second") in seen:
            w.stop()
    check(("ADDED", "first") in seen and ("ADDED", "second") in seen, f"watch=True streams events ({seen})")

    # Server-side apply through the dynamic client: a second manager takes a field with force=True.
    dyn = dynamic.DynamicClient(api_client)
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied", "namespace": NS}, "data": {"owner": "one"}}
    cms.server_side_apply(body=body, field_manager="one")
    body["data"]["owner"] = "two"
    try:
        cms.server_side_apply(body=body, field_manager="two")
        check(False, "a second manager conflicts without force")
    except ApiException as e:
        check(e.status == 409, "a second manager conflicts without force")
    out = cms.server_side_apply(body=body, field_manager="two", force_conflicts=True)
    check(out.data.owner == "two", "force=True (sent as `True`) takes the field over")

    # Fresh workload objects read back typed: their status counters are present.
    labels = {"app": "py"}
    template = client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels=labels),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="shoal.local/exerciser:latest")]),
    )
    selector = client.V1LabelSelector(match_labels=labels)
    apps.create_namespaced_daemon_set(NS, client.V1DaemonSet(
        metadata=client.V1ObjectMeta(name="ds"), spec=client.V1DaemonSetSpec(selector=selector, template=template)))
    apps.create_namespaced_stateful_set(NS, client.V1StatefulSet(
        metadata=client.V1ObjectMeta(name="ss"),
        spec=client.V1StatefulSetSpec(selector=selector, template=template, service_name="ss", replicas=0)))
    apps.create_namespaced_replica_set(NS, client.V1ReplicaSet(
        metadata=client.V1ObjectMeta(name="rs"), spec=client.V1ReplicaSetSpec(selector=selector, template=template, replicas=0)))
    ds = apps.read_namespaced_daemon_set("ds", NS)
    check(ds.status.number_ready is not None and ds.status.desired_number_scheduled is not None, "typed DaemonSet read")
    check(ds.spec.update_strategy.rolling_update.max_surge == 0, "DaemonSet rolling update defaults")
    ss = apps.read_namespaced_stateful_set("ss", NS)
    check(ss.status.replicas == 0, "typed StatefulSet read")
    rs = apps.read_namespaced_replica_set("rs", NS)
    check(rs.status.replicas == 0, "typed ReplicaSet read")
    apps.delete_namespaced_daemon_set("ds", NS)

    # Follow logs: the client sends `follow=True`; lines arrive while the container runs.
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="talker"),
        spec=client.V1PodSpec(restart_policy="Never", containers=[client.V1Container(
            name="t", image="shoal.local/exerciser:latest",
            args=["print", "one", "sleep", "2", "print", "two", "sleep", "2", "print", "three"])]),
    )
    core.create_namespaced_pod(NS, pod)
    deadline = time.time() + 60
    while core.read_namespaced_pod("talker", NS).status.phase != "Running":
        if time.time() > deadline:
            raise AssertionError("the pod did not start running within 60 s")
        time.sleep(0.2)
    resp = core.read_namespaced_pod_log("talker", NS, follow=True, _preload_content=False)
    lines, first_at = [], None
    for chunk in resp.stream(64):
        for line in chunk.decode().splitlines():
            lines.append(line)
            first_at = first_at or time.time()
    took = time.time() - (first_at or time.time())
    check(lines == ["one", "two", "three"], f"follow=True streams the whole log ({lines})")
    check(took > 1, f"follow=True kept the stream open while the container ran ({took:.1f} s)")

    core.delete_namespace(NS)
    print("all checks passed", flush=True)


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except Exception as e:  # noqa: BLE001 - report any failure as the test's message
        import traceback
        traceback.print_exc()
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
