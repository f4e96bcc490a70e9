"""Kubernetes manifests: render every overlay with `kubectl kustomize`, validate each object offline
against the Kubernetes JSON schemas (kubernetes-validate) or, for CRDs, against a schema of our own,
and check the cross-object properties that break a rollout: probes, ports, selectors, references.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from common.settings import SplitSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
EXAMPLES = ROOT / "deploy" / "examples"
KUBECTL = shutil.which("kubectl")
# The oldest Kubernetes we claim to support, and the newest the schema package knows.
K8S_VERSIONS = ("1.29", kubernetes_validate.latest_version())
OPERATOR_CREATED_SECRETS = {"pdd-api-keys"}  # created with `kubectl create secret`, never in git
RENDERS = {
    "cpu": ["overlays/cpu"],
    "ascend": ["overlays/ascend"],
    "ascend-vllm": ["overlays/ascend-vllm"],
    "cpu+api-keys": ["overlays/cpu", "components/api-keys"],
}

# The fields of monitoring.coreos.com/v1 ServiceMonitor we use; anything else is a typo.
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name", "namespace"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}
            },
        },
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "required": ["matchLabels"],
                    "additionalProperties": False,
                    "properties": {
                        "matchLabels": {
                            "type": "object",
                            "minProperties": 1,
                            "additionalProperties": {"type": "string"},
                        }
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["port", "path"],
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string", "minLength": 1},
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        },
                    },
                },
            },
        },
    },
}
CRD_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR_SCHEMA}


def kustomize(target: Path) -> list[dict]:
    out = subprocess.run(
        [KUBECTL, "kustomize", str(target)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, f"kubectl kustomize {target} failed:\n{out.stderr}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module", params=list(RENDERS))
def rendered(request, tmp_path_factory) -> list[dict]:
    if KUBECTL is None:
        pytest.skip("kubectl not on PATH: cannot render the kustomize overlays")
    overlay, *components = RENDERS[request.param]
    if not components:
        return kustomize(K8S / overlay)
    # An overlay plus opt-in components, the way an operator would compose them.
    work = tmp_path_factory.mktemp("kustomize")
    rel = lambda p: os.path.relpath(K8S / p, work)  # noqa: E731  (kustomize refuses absolute paths)
    doc = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [rel(overlay)],
        "components": [rel(c) for c in components],
    }
    (work / "kustomization.yaml").write_text(yaml.safe_dump(doc))
    return kustomize(work)


def find(objs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objs if o["kind"] == kind and name in (None, o["metadata"]["name"])]


def one(objs: list[dict], kind: str, name: str) -> dict:
    matches = find(objs, kind, name)
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def flag(container: dict, name: str) -> str:
    """The value of `--name=value` in the container's args (exactly one occurrence)."""
    values = [a.split("=", 1)[1] for a in container.get("args", []) if a.startswith(f"--{name}=")]
    assert len(values) == 1, f"{container['name']}: expected one --{name}=..., got {values}"
    return values[0]


def containers(deploy: dict) -> list[dict]:
    return deploy["spec"]["template"]["spec"]["containers"]


def test_every_object_validates_offline(rendered):
    errors = []
    for obj in rendered:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        crd_schema = CRD_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
        try:
            if crd_schema is not None:
                jsonschema.validate(obj, crd_schema)
                continue
            for version in K8S_VERSIONS:
                # strict: unknown fields (typos) fail too. A kind without a schema raises.
                kubernetes_validate.validate(obj, version, strict=True)
        except Exception as err:  # every validator's error becomes one readable failure line
            errors.append(f"{where}: {err}")
    assert errors == []


def test_expected_objects_in_one_namespace(rendered):
    for kind, name in [
        ("Namespace", "pd-device"),
        ("Deployment", "pdd-prefill"),
        ("Deployment", "pdd-gateway"),
        ("Service", "pdd-prefill"),
        ("Service", "pdd-prefill-headless"),
        ("Service", "pdd-gateway"),
        ("HorizontalPodAutoscaler", "pdd-prefill"),
        ("ServiceMonitor", "pdd-prefill"),
        ("ServiceMonitor", "pdd-gateway"),
    ]:
        one(rendered, kind, name)
    assert len(find(rendered, "ConfigMap")) == 1
    namespaced = [o for o in rendered if o["kind"] != "Namespace"]
    assert {o["metadata"].get("namespace") for o in namespaced} == {"pd-device"}


def test_probes_hit_health_on_the_serving_port(rendered):
    for deploy in find(rendered, "Deployment"):
        for c in containers(deploy):
            port = int(flag(c, "port"))
            named = {p["name"]: p["containerPort"] for p in c["ports"]}
            assert port in named.values(), f"{c['name']}: --port={port} is not a containerPort"
            for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
                if kind not in c:
                    assert kind == "startupProbe", f"{c['name']} has no {kind}"
                    continue
                get = c[kind]["httpGet"]
                assert get["path"] == "/health", (c["name"], kind)
                target = named.get(get["port"], get["port"])  # a name or a number
                assert target == port, f"{c['name']} {kind} probes {target}, serves {port}"


def test_pods_run_as_non_root(rendered):
    for deploy in find(rendered, "Deployment"):
        pod = deploy["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        for c in containers(deploy):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert "ALL" in sc["capabilities"]["drop"]
            assert sc.get("runAsUser", 1) != 0


def test_device_flag_and_npu_resources_match_the_overlay(rendered):
    prefill = containers(one(rendered, "Deployment", "pdd-prefill"))[0]
    device = flag(prefill, "device")
    npu = "huawei.com/Ascend910"
    if "ascend" in prefill["image"]:
        assert device == "npu"
        assert int(prefill["resources"]["requests"][npu]) >= 1
        assert prefill["resources"]["limits"][npu] == prefill["resources"]["requests"][npu]
        pod = one(rendered, "Deployment", "pdd-prefill")["spec"]["template"]["spec"]
        assert pod["nodeSelector"], "NPU pods must be pinned to Ascend nodes"
        assert any(t["key"] == npu for t in pod["tolerations"])
    else:
        assert device == "cpu"
        assert npu not in prefill["resources"].get("limits", {})
    gateway = containers(one(rendered, "Deployment", "pdd-gateway"))[0]
    assert npu not in gateway["resources"]["requests"], "the gateway needs no NPU"
    threads = int(flag(prefill, "threads"))
    assert threads <= int(prefill["resources"]["limits"]["cpu"]), "--threads beyond the CPU limit"


def test_images_are_set_by_the_overlay(rendered):
    for deploy in find(rendered, "Deployment"):
        for c in containers(deploy):
            name, _, tag = c["image"].rpartition(":")
            assert name and tag, f"{c['image']} has no tag"
            assert name not in {"pd-device-prefill", "pd-device-gateway"}, "placeholder image left"
    gateway = containers(one(rendered, "Deployment", "pdd-gateway"))[0]
    assert "ascend" not in gateway["image"], "the gateway needs no NPU image"
    assert gateway["command"] == ["pdd", "gateway"]


def test_hpa_scales_prefill_on_active_requests(rendered):
    hpa = one(rendered, "HorizontalPodAutoscaler", "pdd-prefill")["spec"]
    ref = hpa["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"]) == ("apps/v1", "Deployment")
    deploy = one(rendered, "Deployment", ref["name"])
    assert containers(deploy)[0]["name"] == "prefill"
    assert "replicas" not in deploy["spec"], "a fixed replica count fights the HPA on every apply"
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "pdd_active_requests"
    target = float(metric["pods"]["target"]["averageValue"])
    max_concurrent = int(flag(containers(deploy)[0], "max-concurrent"))
    assert 0 < target < max_concurrent, "scale out before instances start rejecting"
    assert 1 <= hpa["minReplicas"] < hpa["maxReplicas"]


def pod_labels(rendered) -> list[tuple[dict, dict]]:
    return [(d, d["spec"]["template"]["metadata"]["labels"]) for d in find(rendered, "Deployment")]


def test_services_select_existing_pods_and_ports(rendered):
    for svc in find(rendered, "Service"):
        selector = svc["spec"]["selector"]
        matched = [d for d, labels in pod_labels(rendered) if selector.items() <= labels.items()]
        assert len(matched) == 1, f"Service {svc['metadata']['name']} selects {len(matched)}"
        ports = {p["name"]: p["containerPort"] for p in containers(matched[0])[0]["ports"]}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in ports, f"{svc['metadata']['name']}: {port['targetPort']}"
            if port["name"] == "grpc":
                assert port.get("appProtocol") == "grpc"
    for deploy in find(rendered, "Deployment"):
        match = deploy["spec"]["selector"]["matchLabels"]
        assert match.items() <= deploy["spec"]["template"]["metadata"]["labels"].items()


def test_service_monitors_scrape_one_service_each(rendered):
    for sm in find(rendered, "ServiceMonitor"):
        want = sm["spec"]["selector"]["matchLabels"]
        svcs = [
            s for s in find(rendered, "Service") if want.items() <= s["metadata"]["labels"].items()
        ]
        assert len(svcs) == 1, f"{sm['metadata']['name']} selects {len(svcs)} Services"
        names = {p["name"] for p in svcs[0]["spec"]["ports"]}
        assert all(e["port"] in names and e["path"] == "/metrics" for e in sm["spec"]["endpoints"])
    headless = one(rendered, "Service", "pdd-prefill-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["metadata"]["labels"]["pdd.io/metrics"] == "prefill", "HPA needs per-pod series"


def test_gateway_upstream_dns_is_the_headless_service(rendered):
    gateway = containers(one(rendered, "Deployment", "pdd-gateway"))[0]
    host, port = flag(gateway, "upstream-dns").rsplit(":", 1)
    name, namespace, suffix = host.split(".", 2)
    svc = one(rendered, "Service", name)
    assert svc["spec"]["clusterIP"] == "None", "a ClusterIP VIP hides the individual instances"
    assert (namespace, suffix) == (svc["metadata"]["namespace"], "svc")
    assert int(port) in {p["port"] for p in svc["spec"]["ports"] if p["name"] == "http"}


def referenced(pod: dict) -> list[tuple[str, str, bool]]:
    """(kind, name, optional) of every ConfigMap and Secret a pod spec uses."""
    refs = []
    for vol in pod.get("volumes", []):
        if "configMap" in vol:
            refs.append(("ConfigMap", vol["configMap"]["name"], vol["configMap"].get("optional")))
        if "secret" in vol:
            refs.append(("Secret", vol["secret"]["secretName"], vol["secret"].get("optional")))
    for c in pod["containers"]:
        for env in c.get("env", []):
            for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                ref = env.get("valueFrom", {}).get(key)
                if ref:
                    refs.append((kind, ref["name"], ref.get("optional")))
        for src in c.get("envFrom", []):
            for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                if key in src:
                    refs.append((kind, src[key]["name"], src[key].get("optional")))
    return [(kind, name, bool(optional)) for kind, name, optional in refs]


def test_referenced_configmaps_and_secrets_exist_or_are_optional(rendered):
    for deploy in find(rendered, "Deployment"):
        pod = deploy["spec"]["template"]["spec"]
        for kind, name, optional in referenced(pod):
            if find(rendered, kind, name) or optional:
                continue
            # Keys are created out of band; required on purpose so a pod never starts open.
            assert kind == "Secret" and name in OPERATOR_CREATED_SECRETS, f"missing {kind}/{name}"
        for vol in pod.get("volumes", []):
            if "secret" in vol and not vol["secret"].get("defaultMode", 0o644) & 0o004:
                assert pod["securityContext"].get("fsGroup"), "the non-root user cannot read it"


def mounted_file(container: dict, pod: dict, path: str) -> dict:
    """The volume that holds `path` in the container, checking the file name is one of its keys."""
    for mount in container["volumeMounts"]:
        prefix = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix):
            vol = next(v for v in pod["volumes"] if v["name"] == mount["name"])
            return {"volume": vol, "key": path[len(prefix) :]}
    raise AssertionError(f"{path} is not under any volume mount of {container['name']}")


def test_settings_configmap_is_valid_and_mounted_where_serve_reads_it(rendered):
    deploy = one(rendered, "Deployment", "pdd-prefill")
    prefill, pod = containers(deploy)[0], deploy["spec"]["template"]["spec"]
    found = mounted_file(prefill, pod, flag(prefill, "settings"))
    cm = one(rendered, "ConfigMap", found["volume"]["configMap"]["name"])
    SplitSettings.model_validate(json.loads(cm["data"][found["key"]]))
    env = {e["name"]: e.get("value") for e in prefill["env"]}
    assert env["PDD_CACHE_DIR"] == "/models", "must match the image's pre-converted cache"


def test_api_keys_component_wires_the_key_file(rendered):
    for deploy in find(rendered, "Deployment"):
        c, pod = containers(deploy)[0], deploy["spec"]["template"]["spec"]
        keys = [a for a in c["args"] if a.startswith("--api-key-file=")]
        if not keys:
            assert not find(rendered, "Secret") and "pdd-api-keys" not in json.dumps(pod)
            continue
        found = mounted_file(c, pod, flag(c, "api-key-file"))
        assert found["volume"]["secret"]["secretName"] == "pdd-api-keys"
        assert found["volume"]["secret"]["optional"] is False, "fail closed without keys"
        example = yaml.safe_load((EXAMPLES / "api-keys-secret.yaml").read_text())
        assert found["key"] in example["stringData"], "example Secret uses another key name"


def test_example_files_are_valid():
    base = json.loads((K8S / "base" / "settings.json").read_text())
    example = json.loads((EXAMPLES / "settings.json").read_text())
    assert base == example, "deploy/k8s/base/settings.json drifted from deploy/examples"
    SplitSettings.model_validate(example)
    secret = yaml.safe_load((EXAMPLES / "api-keys-secret.yaml").read_text())
    kubernetes_validate.validate(secret, K8S_VERSIONS[-1], strict=True)
    assert secret["metadata"]["name"] in OPERATOR_CREATED_SECRETS


def test_compose_gateway_targets_the_prefill_service():
    compose = yaml.safe_load((EXAMPLES / "docker-compose.yml").read_text())["services"]
    prefill, gateway = compose["prefill-0"], compose["gateway"]
    port = next(a.split("=", 1)[1] for a in prefill["command"] if a.startswith("--port="))
    assert "--upstream=http://prefill-0:" + port in gateway["command"]
    assert gateway["entrypoint"] == ["pdd", "gateway"]
    gateway_port = next(a.split("=", 1)[1] for a in gateway["command"] if a.startswith("--port="))
    assert gateway["environment"]["PDD_HEALTH_PORT"] == gateway_port
    settings = next(v for v in prefill["volumes"] if v.endswith(":/etc/pdd/settings.json:ro"))
    assert (EXAMPLES / settings.split(":")[0]).resolve().is_file()
