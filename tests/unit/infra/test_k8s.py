"""infra/k8s: rendered from regions.yaml, up to date, valid against the Kubernetes API schemas.

Core objects are validated strictly (unknown fields are errors) with
kubernetes-validate against a pinned Kubernetes version. The ServiceMonitor is
a Prometheus Operator CRD that the core schemas do not know, so its shape is
checked by hand below.
"""

from __future__ import annotations

import ipaddress
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ezthrottle_server.common.config import Settings, load_settings
from ezthrottle_server.infra import k8s

REPO = Path(__file__).resolve().parents[3]
OUT = REPO / "infra" / "k8s"
REGIONS = REPO / "regions.yaml"
K8S_VERSION = "1.31.0"  # the oldest Kubernetes we support; kubernetes-validate ships its schemas
ROLES = {"edge", "coordinator", "delivery"}


def load_docs(root: Path) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(root.rglob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return load_docs(OUT)


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings("render", env={}, regions_file=REGIONS)


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def container(dep: dict[str, Any]) -> dict[str, Any]:
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return c


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c["env"]}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# -- up to date --------------------------------------------------------------


def test_committed_manifests_are_what_the_renderer_makes(tmp_path: Path) -> None:
    assert k8s.main(["--regions", str(REGIONS), "--out", str(tmp_path)]) == 0
    rendered = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(OUT).as_posix() for p in OUT.rglob("*") if p.is_file())
    assert committed == rendered, "run: python -m ezthrottle_server.infra.k8s --out infra/k8s"
    for rel in rendered:
        assert (OUT / rel).read_text() == (tmp_path / rel).read_text(), (
            f"infra/k8s/{rel} is out of date; run: python -m ezthrottle_server.infra.k8s --out infra/k8s"
        )
    assert k8s.main(["--regions", str(REGIONS), "--out", str(OUT), "--check"]) == 0


def test_check_notices_an_edited_and_a_leftover_file(tmp_path: Path) -> None:
    shutil.copytree(OUT, tmp_path / "k8s")
    out = tmp_path / "k8s"
    assert k8s.main(["--regions", str(REGIONS), "--out", str(out), "--check"]) == 0
    edited = out / "base" / "edge-iad.yaml"
    edited.write_text(edited.read_text().replace("replicas: 2", "replicas: 3"))
    assert k8s.stale(k8s.render_file(REGIONS), out) == ["base/edge-iad.yaml"]
    assert k8s.main(["--regions", str(REGIONS), "--out", str(out), "--check"]) == 1
    leftover = out / "base" / "edge-gone.yaml"
    leftover.write_text(k8s.HEADER + "---\n{}\n")
    assert k8s.stale(k8s.render_file(REGIONS), out) == ["base/edge-iad.yaml", "base/edge-gone.yaml"]


def test_write_removes_generated_leftovers_but_not_foreign_files(tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    k8s.write(k8s.render_file(REGIONS), out)
    (out / "base" / "edge-gone.yaml").write_text(k8s.HEADER + "---\n{}\n")
    (out / "base" / "mine.yaml").write_text("# hand-written\n")
    k8s.write(k8s.render_file(REGIONS), out)
    assert not (out / "base" / "edge-gone.yaml").exists()
    assert (out / "base" / "mine.yaml").exists()
    assert k8s.stale(k8s.render_file(REGIONS), out) == []


def test_rendering_follows_regions_yaml(tmp_path: Path) -> None:
    regions = tmp_path / "regions.yaml"
    regions.write_text(
        "profile: production\ncoordinator: {port: 9100}\ndelivery: {port: 9200}\n"
        "regions:\n  - id: fra\n    port: 9001\n  - id: sin\n    port: 9002\n"
    )
    out = tmp_path / "k8s"
    assert k8s.main(["--regions", str(regions), "--out", str(out), "--image", "registry.example/ezt:9", "--namespace", "dam"]) == 0
    docs = load_docs(out)
    deps = by_kind(docs, "Deployment")
    assert set(deps) == {"coordinator", "delivery", "edge-fra", "edge-sin"}
    assert container(deps["edge-sin"])["ports"][0]["containerPort"] == 9002
    assert env_of(container(deps["edge-fra"]))["EZT_REGION"]["value"] == "fra"
    assert container(deps["coordinator"])["ports"][0]["containerPort"] == 9100
    assert by_kind(docs, "Service")["delivery"]["spec"]["ports"][0]["port"] == 9200
    assert {d["metadata"].get("namespace", d["metadata"]["name"]) for d in docs} == {"dam"}
    assert {container(d)["image"] for d in deps.values()} == {"registry.example/ezt:9"}
    assert by_kind(docs, "ConfigMap")["ezthrottle-regions"]["data"]["regions.yaml"] == regions.read_text()


# -- schema validation ---------------------------------------------------------


def test_core_objects_validate_strictly(docs: list[dict[str, Any]]) -> None:
    core = [d for d in docs if d["apiVersion"] != "monitoring.coreos.com/v1"]
    assert len(core) == len(docs) - 1
    for d in core:
        # Strict: unknown fields fail. The returned version proves no silent fallback to another schema set.
        assert kubernetes_validate.validate(d, K8S_VERSION, strict=True) == "1.31", d["metadata"]["name"]


def test_the_validator_catches_a_misspelt_field(docs: list[dict[str, Any]]) -> None:
    import copy

    dep = copy.deepcopy(by_kind(docs, "Deployment")["coordinator"])
    container(dep)["readinesProbe"] = container(dep).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


def test_service_monitor_shape(docs: list[dict[str, Any]]) -> None:
    (sm,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(sm) == {"apiVersion", "kind", "metadata", "spec"}
    spec = sm["spec"]
    assert set(spec) <= {"namespaceSelector", "selector", "targetLabels", "endpoints", "jobLabel", "podTargetLabels"}
    assert spec["namespaceSelector"] == {"matchNames": [sm["metadata"]["namespace"]]}
    services = list(by_kind(docs, "Service").values())
    assert services and all(selects(spec["selector"]["matchLabels"], s["metadata"]["labels"]) for s in services)
    (endpoint,) = spec["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert all(endpoint["port"] in {p["name"] for p in s["spec"]["ports"]} for s in services)
    for label in spec["targetLabels"]:
        assert any(label in s["metadata"]["labels"] for s in services), label


def test_plain_scrape_config_keeps_every_service() -> None:
    text = (OUT / "monitoring" / "prometheus-scrape.yml").read_text()
    (job,) = yaml.safe_load(text)["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["kubernetes_sd_configs"][0]["role"] == "endpoints"
    keep = {r["source_labels"][0]: r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"}
    assert keep == {
        "__meta_kubernetes_service_label_app_kubernetes_io_part_of": "ezthrottle",
        "__meta_kubernetes_endpoint_port_name": "http",
    }
    for svc in by_kind(load_docs(OUT), "Service").values():
        assert svc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "ezthrottle"


# -- what the objects say ------------------------------------------------------


def test_one_edge_deployment_service_and_pdb_per_region(docs: list[dict[str, Any]], settings: Settings) -> None:
    deps, svcs, pdbs = by_kind(docs, "Deployment"), by_kind(docs, "Service"), by_kind(docs, "PodDisruptionBudget")
    names = {f"edge-{r.id}" for r in settings.regions} | {"coordinator", "delivery"}
    assert set(deps) == set(svcs) == set(pdbs) == names
    for r in settings.regions:
        c = container(deps[f"edge-{r.id}"])
        env = env_of(c)
        assert c["args"] == ["edge"]
        assert env["EZT_REGION"]["value"] == r.id
        assert env["EZT_PORT"]["value"] == str(r.port)
        assert c["ports"] == [{"name": "http", "containerPort": r.port, "protocol": "TCP"}]
        assert svcs[f"edge-{r.id}"]["spec"]["ports"][0]["port"] == r.port


def test_coordinator_runs_two_replicas(docs: list[dict[str, Any]], settings: Settings) -> None:
    dep = by_kind(docs, "Deployment")["coordinator"]
    assert dep["spec"]["replicas"] == 2
    c = container(dep)
    assert c["args"] == ["coordinator"]
    assert env_of(c)["EZT_PORT"]["value"] == str(settings.coordinator_port)
    # Two replicas need two lease holders: the node id is the pod's name.
    assert env_of(c)["EZT_NODE_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    delivery = container(by_kind(docs, "Deployment")["delivery"])
    assert delivery["args"] == ["delivery"] and env_of(delivery)["EZT_PORT"]["value"] == str(settings.delivery_port)


def test_selectors_pick_exactly_their_own_pods(docs: list[dict[str, Any]]) -> None:
    deps = by_kind(docs, "Deployment")
    pods = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deps.items()}
    for name, dep in deps.items():
        assert selects(dep["spec"]["selector"]["matchLabels"], pods[name])
    for kind, sel in (
        ("Service", lambda o: o["spec"]["selector"]),
        ("PodDisruptionBudget", lambda o: o["spec"]["selector"]["matchLabels"]),
    ):
        for name, obj in by_kind(docs, kind).items():
            matched = [n for n, labels in pods.items() if selects(sel(obj), labels)]
            assert matched == [name], (kind, name, matched)


def test_pdbs_allow_a_drain_but_keep_one_pod(docs: list[dict[str, Any]]) -> None:
    deps = by_kind(docs, "Deployment")
    for name, pdb in by_kind(docs, "PodDisruptionBudget").items():
        assert pdb["spec"]["maxUnavailable"] == 1
        assert deps[name]["spec"]["replicas"] >= 2, f"{name}: with one replica the PDB would block every drain"


def test_probes_resources_and_security(docs: list[dict[str, Any]]) -> None:
    for name, dep in by_kind(docs, "Deployment").items():
        pod = dep["spec"]["template"]["spec"]
        c = container(dep)
        port_names = {p["name"] for p in c["ports"]}
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            assert c[probe]["httpGet"]["port"] in port_names, (name, probe)
        for bound in ("requests", "limits"):
            assert set(c["resources"][bound]) == {"cpu", "memory"}, (name, bound)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == k8s.UID != 0
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert pod["automountServiceAccountToken"] is False
        assert c["args"][0] in ROLES


def test_config_and_secret_wiring(docs: list[dict[str, Any]]) -> None:
    cm = by_kind(docs, "ConfigMap")["ezthrottle-regions"]
    assert cm["data"]["regions.yaml"] == REGIONS.read_text()
    for name, dep in by_kind(docs, "Deployment").items():
        c = container(dep)
        env = env_of(c)
        assert env["EZT_PROFILE"]["value"] == "production", name
        assert env["EZT_HOST"]["value"] == "0.0.0.0", name
        assert env["REDIS_URL"]["valueFrom"] == {"secretKeyRef": {"name": k8s.REDIS_SECRET, "key": "url"}}, name
        assert "value" not in env["REDIS_URL"], "REDIS_URL must not be written into a manifest"
        volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        regions_dir, file_name = env["EZT_REGIONS_FILE"]["value"].rsplit("/", 1)
        assert file_name in cm["data"]
        assert volumes[mounts[regions_dir]]["configMap"]["name"] == cm["metadata"]["name"], name
        assert "/tmp" in mounts, name


def test_everything_in_one_namespace_and_no_secret_rendered(docs: list[dict[str, Any]]) -> None:
    kinds = Counter(d["kind"] for d in docs)
    assert kinds["Namespace"] == 1 and kinds["Secret"] == 0
    ns = by_kind(docs, "Namespace")
    (name,) = ns
    assert all(d["metadata"].get("namespace") == name for d in docs if d["kind"] != "Namespace")
    assert sorted(p.name for p in (OUT / "base").iterdir())[0] == "00-namespace.yaml", "kubectl apply -f must create the namespace first"


def test_proxies_are_trusted_and_edges_advertise_their_public_url(docs: list[dict[str, Any]], settings: Settings) -> None:
    deps = by_kind(docs, "Deployment")
    for name, dep in deps.items():
        proxies = env_of(container(dep))["EZT_TRUSTED_PROXIES"]["value"]  # the ingress controller's networks
        assert [str(ipaddress.ip_network(n)) for n in proxies.split(",")] == k8s.DEFAULT_TRUSTED_PROXIES.split(","), name
    for r in settings.regions:  # never http://0.0.0.0:<port> (EZT_HOST), which no client can reach
        env = env_of(container(deps[f"edge-{r.id}"]))
        assert env["EZT_PUBLIC_URL"]["value"] == f"http://edge-{r.id}.{k8s.DEFAULT_NAMESPACE}.svc:{r.port}"
    assert "EZT_PUBLIC_URL" not in env_of(container(deps["coordinator"]))


def test_trusted_proxies_and_public_urls_are_options(tmp_path: Path) -> None:
    opts = k8s.RenderOptions(namespace="dam", trusted_proxies="10.42.0.0/16", public_url="https://{region}.dam.example.com")
    docs = [d for text in k8s.render_file(REGIONS, opts).values() for d in yaml.safe_load_all(text) if d and "kind" in d]
    env = env_of(container(by_kind(docs, "Deployment")["edge-iad"]))
    assert env["EZT_PUBLIC_URL"]["value"] == "https://iad.dam.example.com"
    assert env["EZT_TRUSTED_PROXIES"]["value"] == "10.42.0.0/16"
    out = tmp_path / "k8s"
    argv = ["--regions", str(REGIONS), "--out", str(out), "--public-url", "https://{region}.x.example", "--trusted-proxies", "10.1.0.0/16"]
    assert k8s.main(argv) == 0
    assert "https://lax.x.example" in (out / "base" / "edge-lax.yaml").read_text()


def test_every_pod_needs_the_sealing_keys(docs: list[dict[str, Any]]) -> None:
    for name, dep in by_kind(docs, "Deployment").items():  # production does not start without them
        env = env_of(container(dep))
        assert env["EZT_SECRETS_KEYS"]["valueFrom"] == {"secretKeyRef": {"name": k8s.SEALING_SECRET, "key": "keys"}}, name
        assert "EZT_INSECURE_PLAINTEXT_SECRETS" not in env, name


def test_edges_and_delivery_run_a_process_per_core_of_their_cpu_limit(docs: list[dict[str, Any]]) -> None:
    # Set explicitly: the default counts the cores the container may run on (the node's), not its limit.
    for name, dep in by_kind(docs, "Deployment").items():
        c = container(dep)
        role = c["args"][0]
        env = env_of(c)
        if role in ("edge", "delivery"):
            workers = env[f"EZT_{role.upper()}_WORKERS"]["value"]
            assert int(workers) == int(c["resources"]["limits"]["cpu"]) >= 1, name
        else:
            assert not {"EZT_EDGE_WORKERS", "EZT_DELIVERY_WORKERS"} & set(env), name
