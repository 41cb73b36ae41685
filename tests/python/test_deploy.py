"""deploy/k8s, deploy/compose.yaml and the Dockerfiles: they parse, hang together (selectors,
ports, probes, the HPA's metric through prometheus-adapter), name only metrics a live /metrics
scrape exports and only EPAS_* variables that `epas serve` reads; the image's HEALTHCHECK
command works against a running server; hadolint passes where it is installed."""

import copy
import json
import re
import subprocess

import pytest

from epas_testing import (
    BINARY,
    NAME,
    ROOT,
    epas_server,
    exported_metrics,
    free_port,
    http,
    metric_names_in,
    require_module,
    require_tool,
    send_traffic,
)

yaml = require_module("yaml")

K8S = ROOT / "deploy" / "k8s"
DOCKERFILES = [ROOT / "Dockerfile", ROOT / "Dockerfile.cuda"]
# Variables a Dockerfile may set before `epas serve` reads them (none now: EPAS_DEVICE is
# `--device`).
PENDING_ENV: dict[str, set[str]] = {}


@pytest.fixture(scope="module")
def server():
    with epas_server("--allow-untrained-sharing") as base:
        send_traffic(base, [0.0, 0.5], seconds=0, min_requests=1)
        yield base, exported_metrics(base)


@pytest.fixture(scope="module")
def serve_env_vars():
    out = subprocess.run([str(BINARY), "serve", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    names = set(re.findall(r"env: (EPAS_[A-Z_]+)", out.stdout))
    assert {"EPAS_HOST", "EPAS_PORT", "EPAS_MODEL", "EPAS_API_KEY"} <= names
    return names


def k8s_docs():
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.setdefault(doc["kind"], []).append((path.name, doc))
    return docs


def one(docs, kind, name=None):
    found = [d for _, d in docs[kind] if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, found)
    return found[0]


def strings(node):
    """Every string in a parsed YAML/JSON tree (keys included)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield str(k)
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)
    elif isinstance(node, str):
        yield node


def test_k8s_manifests_parse_and_fit_together():
    docs = k8s_docs()
    for kind in (
        "Deployment",
        "Service",
        "ConfigMap",
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
        "PrometheusRule",
    ):
        assert kind in docs, kind
    deploy = one(docs, "Deployment", "epas")
    pod = deploy["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= labels.items()
    [container] = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/health" and get["port"] in ports, probe
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= container["resources"][kind].keys()
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # The drain (EPAS_SHUTDOWN_TIMEOUT) fits in the grace period after the preStop pause.
    config = one(docs, "ConfigMap", "epas-config")
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert int(config["data"]["EPAS_SHUTDOWN_TIMEOUT"]) + 5 < grace
    assert config["data"]["EPAS_HOST"] == "0.0.0.0"
    assert int(config["data"]["EPAS_PORT"]) == ports["http"]
    assert container["envFrom"][0]["configMapRef"]["name"] == "epas-config"

    service = one(docs, "Service", "epas")
    assert service["spec"]["selector"].items() <= labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    monitor = one(docs, "ServiceMonitor", "epas")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"

    hpa = one(docs, "HorizontalPodAutoscaler", "epas")
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deploy["metadata"]["name"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    hpa_metric = metric["pods"]["metric"]["name"]
    adapter = yaml.safe_load(one(docs, "ConfigMap", "adapter-config")["data"]["config.yaml"])
    served = {r["name"]["as"]: r for r in adapter["rules"]}
    assert hpa_metric in served, "the HPA's metric must come from a prometheus-adapter rule"
    rule = served[hpa_metric]
    series = re.match(r"[\w:]+", rule["seriesQuery"]).group()
    assert re.fullmatch(rule["name"]["matches"].strip("^$"), series), rule
    assert series == "vllm:num_requests_waiting", "the HPA scales on the name routers read"

    rules = one(docs, "PrometheusRule", "epas")["spec"]["groups"]
    plain = yaml.safe_load((ROOT / "deploy/prometheus/rules/epas.rules.yml").read_text())["groups"]
    assert rules == plain, "deploy/k8s/prometheusrule.yaml differs from deploy/prometheus/rules"

    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (K8S / resource).exists(), resource


def test_k8s_and_compose_name_only_exported_metrics(server):
    _, exported = server
    used = set()
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            for s in strings(doc):
                used |= metric_names_in(s)
    assert {"epas_requests_waiting", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"} <= used
    missing = used - exported
    assert not missing, f"deploy/k8s names metrics the server does not export: {missing}"


def test_env_vars_are_real_serve_flags(serve_env_vars):
    docs = k8s_docs()
    used = {"deploy/k8s/configmap.yaml": set(one(docs, "ConfigMap", "epas-config")["data"])}
    deploy = one(docs, "Deployment", "epas")
    used["deploy/k8s/deployment.yaml"] = {
        e["name"] for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    used["deploy/compose.yaml"] = set(compose["services"]["epas"]["environment"])
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        names = set(re.findall(r"\b(EPAS_[A-Z_]+)=", text))
        used[dockerfile.name] = names - PENDING_ENV.get(dockerfile.name, set())
    for where, names in used.items():
        unknown = {n for n in names if n.startswith("EPAS_")} - serve_env_vars
        assert not unknown, f"{where} sets variables `epas serve` does not read: {unknown}"


def apply_json_patch(doc, ops):
    """RFC 6902 `add` / `replace` (what the GPU overlay uses); a path whose parent is missing,
    or a `replace` of a missing key, fails like kustomize would."""
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            assert op["op"] == "add" and last == "-", op
            node.append(op["value"])
        else:
            assert op["op"] == "add" or last in node, f"replace of a missing {op['path']}"
            node[last] = op["value"]
    return doc


def test_gpu_overlay_patches_the_deployment_onto_a_gpu(serve_env_vars):
    overlay = yaml.safe_load((K8S / "gpu" / "kustomization.yaml").read_text())
    assert overlay["resources"] == [".."]
    base = one(k8s_docs(), "Deployment", "epas")
    assert overlay["images"][0]["name"] == base["spec"]["template"]["spec"]["containers"][0]["image"].split(":")[0]
    (patch,) = overlay["patches"]
    assert patch["target"] == {"kind": "Deployment", "name": "epas"}
    gpu = apply_json_patch(base, yaml.safe_load(patch["patch"]))
    container = gpu["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["EPAS_DEVICE"] == "cuda"
    assert {n for n in env if n.startswith("EPAS_")} <= serve_env_vars
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["spec"]["template"]["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    # The device flags parse: the CPU build refuses cuda by name, not as an unknown value.
    out = subprocess.run(
        [str(BINARY), "serve", "--device", env["EPAS_DEVICE"], "--device-dtype",
         env["EPAS_DEVICE_DTYPE"], "--port", "0"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1 and "cuda" in out.stderr, out.stderr


def test_compose_runs_epas_prometheus_and_grafana():
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"epas", "prometheus", "grafana"} <= services.keys()
    assert services["epas"]["build"]["context"] == ".."
    assert (ROOT / services["epas"]["build"]["dockerfile"]).exists()
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / "deploy" / source).exists(), volume
    prom_cmd = " ".join(services["prometheus"]["command"])
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom_cmd
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    epas_job = next(j for j in scrape["scrape_configs"] if j["job_name"] == "epas")
    assert epas_job["static_configs"][0]["targets"] == ["epas:8080"]


def dockerfile_instructions(path):
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        word, _, rest = current.partition(" ")
        lines.append((word.upper(), rest.strip()))
        current = ""
    return lines


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_shape(path):
    ins = dockerfile_instructions(path)
    stages = [rest for word, rest in ins if word == "FROM"]
    assert len(stages) >= 2, "multi-stage build"
    assert any(" AS builder" in s for s in stages)
    users = [rest for word, rest in ins if word == "USER"]
    assert users and not users[-1].startswith(("root", "0")), "the runtime runs as non-root"
    assert any(w == "HEALTHCHECK" for w, _ in ins)
    assert ("ENTRYPOINT", '["epas", "serve"]') in ins
    assert any(w == "EXPOSE" and r == "8080" for w, r in ins)


def test_dockerignore_keeps_what_the_build_needs():
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (
        "static",
        "server",
        "model",
        "builtin",
        "train",
        "loadtest",
        "src",
        "Cargo.toml",
        "Cargo.lock",
        "scripts",
    ):
        assert needed not in ignored, needed
    assert {"target", "models", ".git"} <= ignored


def test_dockerfile_healthcheck_command_probes_health(server):
    base, _ = server
    port = base.rsplit(":", 1)[1]
    for path in DOCKERFILES:
        [check] = [rest for word, rest in dockerfile_instructions(path) if word == "HEALTHCHECK"]
        argv = json.loads(check[check.index("CMD") + 3 :].strip())
        ok = subprocess.run(argv, env={"EPAS_PORT": port, "PATH": "/usr/bin:/bin"}, timeout=10)
        assert ok.returncode == 0, f"{path.name}: healthcheck failed against a healthy server"
        closed = subprocess.run(
            argv,
            env={"EPAS_PORT": str(free_port()), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            timeout=10,
        )
        assert closed.returncode != 0, f"{path.name}: healthcheck passed with no server"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(path):
    hadolint = require_tool("hadolint")
    out = subprocess.run([hadolint, str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_fleet_profile_puts_smg_in_front_of_three_replicas(server):
    """Profile `fleet`: epas, epas-2 and epas-3 run the same image and settings, the router
    lists each at its EPAS_PORT, and its SMG flags (those of the failover test) start a real
    router that routes to a live server and probes an endpoint the server answers."""
    from test_router import smg_router
    from test_router_failover import ROUTER_FLAGS

    base, _ = server
    services = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())["services"]
    fleet = {name for name, s in services.items() if "fleet" in s.get("profiles", [])}
    assert fleet == {"epas-2", "epas-3", "router"}
    replicas = ["epas", "epas-2", "epas-3"]
    for name in replicas[1:]:
        for key in ("image", "environment", "read_only", "stop_grace_period"):
            assert services[name][key] == services["epas"][key], (name, key)
        assert "ports" not in services[name], f"{name} is reached through the router only"

    router = services["router"]
    assert router["profiles"] == ["fleet"]
    args = router["command"]
    assert args[0] == "launch"
    urls = args[args.index("--worker-urls") + 1:]
    port = services["epas"]["environment"]["EPAS_PORT"]
    assert urls == [f"http://{name}:{port}" for name in replicas]
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    scraped = [t for j in scrape["scrape_configs"] if j["job_name"].startswith("epas")
               for c in j["static_configs"] for t in c["targets"]]
    assert scraped == [u.removeprefix("http://") for u in urls], "Prometheus scrapes every replica"
    assert set(router["depends_on"]) == set(replicas)
    assert all(d["condition"] == "service_healthy" for d in router["depends_on"].values())
    flags = dict(a[2:].split("=", 1) for a in args[1:args.index("--worker-urls")])
    assert flags.pop("host") == "0.0.0.0"
    router_port = flags.pop("port")
    assert router["ports"] == [f"{router_port}:{router_port}"]
    policy = flags.pop("policy")
    assert flags == dict(zip([f[2:] for f in ROUTER_FLAGS[::2]], ROUTER_FLAGS[1::2]))
    assert http("GET", base + flags["health-check-endpoint"])[0] == 200
    compose_flags = [f"--{k}={v}" for k, v in flags.items()]
    with smg_router([base], *compose_flags, policy=policy, model=NAME):
        pass  # smg_router returns once a completion went through this router


def test_k8s_router_discovers_the_epas_pods_and_its_flags_start_smg(server):
    """deploy/k8s/router.yaml: SMG finds the epas pods by their label on their port (with a
    Role to watch pods), its Service selects only the router, its routing and probe flags are
    those of the compose profile, and they start a real router in front of a live server."""
    from test_router import smg_router

    base, _ = server
    docs = k8s_docs()
    epas = one(docs, "Deployment", "epas")["spec"]["template"]
    router = one(docs, "Deployment", "epas-router")
    pod = router["spec"]["template"]
    assert router["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    epas_service = one(docs, "Service", "epas")
    assert not epas_service["spec"]["selector"].items() <= pod["metadata"]["labels"].items(), (
        "the epas Service must not select the router"
    )
    service = one(docs, "Service", "epas-router")
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    [container] = pod["spec"]["containers"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [container["ports"][0]["name"]]
    args = container["args"]
    assert args[0] == "launch" and "--service-discovery" in args
    key, value = args[args.index("--selector") + 1].split("=")
    assert epas["metadata"]["labels"][key] == value
    flags = dict(a[2:].split("=", 1) for a in args[1:] if a.startswith("--") and "=" in a)
    assert int(flags.pop("service-discovery-port")) == epas["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert flags.pop("service-discovery-namespace") == "$(POD_NAMESPACE)"
    assert {e["name"] for e in container["env"]} >= {"POD_NAMESPACE"}
    assert int(flags.pop("port")) == container["ports"][0]["containerPort"]
    assert pod["spec"]["serviceAccountName"] == one(docs, "RoleBinding", "epas-router")["subjects"][0]["name"]
    role = one(docs, "Role", "epas-router")["rules"][0]
    assert "pods" in role["resources"] and {"list", "watch"} <= set(role["verbs"])

    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())["services"]["router"]
    compose_args = compose["command"]
    compose_flags = dict(a[2:].split("=", 1) for a in compose_args if a.startswith("--") and "=" in a)
    compose_flags.pop("port")
    assert flags == compose_flags, "k8s and compose routers differ"
    help_text = subprocess.run(
        [require_tool("smg"), "launch", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    for arg in args:
        if arg.startswith("--"):
            assert arg.split("=")[0] + " " in help_text, arg
    flags.pop("host")
    policy = flags.pop("policy")
    with smg_router([base], *[f"--{k}={v}" for k, v in flags.items()], policy=policy, model=NAME):
        pass  # smg_router returns once a completion went through this router


def test_gateway_inference_overlay_points_the_pool_and_its_picker_at_the_epas_pods():
    """deploy/k8s/gateway-inference: the InferencePool selects the epas pods on their port, its
    endpoint picker (EPP) is reachable where the pool says, reads its config file from the
    mounted ConfigMap, every scheduling-profile plugin is declared, and the overlay deletes only
    objects the base has (the SMG router)."""
    overlay_dir = K8S / "gateway-inference"
    overlay = yaml.safe_load((overlay_dir / "kustomization.yaml").read_text())
    assert overlay["resources"][0] == ".."
    docs = {}
    for resource in overlay["resources"][1:]:
        for doc in yaml.safe_load_all((overlay_dir / resource).read_text()):
            docs.setdefault(doc["kind"], []).append((resource, doc))
    base = k8s_docs()
    epas = one(base, "Deployment", "epas")["spec"]["template"]
    pool = one(docs, "InferencePool", "epas")
    assert pool["apiVersion"] == "inference.networking.k8s.io/v1"
    assert pool["spec"]["selector"]["matchLabels"].items() <= epas["metadata"]["labels"].items()
    port = epas["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert [p["number"] for p in pool["spec"]["targetPorts"]] == [port]

    epp = one(docs, "Deployment", "epas-epp")
    pod = epp["spec"]["template"]
    assert epp["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    service = one(docs, "Service", pool["spec"]["endpointPickerRef"]["name"])
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert pool["spec"]["endpointPickerRef"]["port"]["number"] in [p["port"] for p in service["spec"]["ports"]]
    [container] = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert all(p["targetPort"] in ports for p in service["spec"]["ports"])
    args = dict(a[2:].split("=", 1) for a in container["args"])
    assert args["pool-name"] == pool["metadata"]["name"]
    assert args["total-queued-requests-metric"] == "vllm:num_requests_waiting"
    assert args["lora-info-metric"] == "", "epas exports no LoRA metric"
    [mount] = container["volumeMounts"]
    config_dir, config_file = args["config-file"].rsplit("/", 1)
    assert mount["mountPath"] == config_dir
    [volume] = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    config = one(docs, "ConfigMap", volume["configMap"]["name"])
    picker = yaml.safe_load(config["data"][config_file])
    assert picker["kind"] == "EndpointPickerConfig"
    declared = {p["type"] for p in picker["plugins"]}
    for profile in picker["schedulingProfiles"]:
        refs = {p["pluginRef"] for p in profile["plugins"]}
        assert refs <= declared, refs - declared
        assert any(r.endswith("-picker") for r in refs), "a profile needs a picker"
    binding = one(docs, "RoleBinding", "epas-epp")
    assert binding["subjects"][0]["name"] == pod["spec"]["serviceAccountName"]
    role = one(docs, "Role", binding["roleRef"]["name"])
    assert any("inferencepools" in r["resources"] for r in role["rules"])

    for entry in overlay["patches"]:
        patch = yaml.safe_load(entry["patch"])
        assert patch["$patch"] == "delete"
        one(base, patch["kind"], patch["metadata"]["name"])  # exists in the base


# Custom resources kubernetes-validate has no schema for; their fields are checked by the tests
# above (ServiceMonitor, PrometheusRule) and the gateway-inference one (InferencePool).
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "InferencePool"}


def test_every_k8s_manifest_fits_its_kubernetes_schema():
    """Every object under deploy/k8s (overlays included) validates strictly (unknown fields are
    errors) against the Kubernetes 1.30 OpenAPI schema bundled with kubernetes-validate."""
    kv = require_module("kubernetes_validate")
    checked, failures = 0, []
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc["apiVersion"].startswith("kustomize.config.k8s.io"):
                continue
            if doc["kind"] in CRD_KINDS:
                continue
            try:
                kv.validate(doc, "1.30", strict=True)
                checked += 1
            except kv.ValidationError as e:
                failures.append(f"{path.relative_to(K8S)} {doc['kind']}: {e}")
    assert not failures, "\n".join(failures)
    assert checked >= 15, checked


def test_the_schema_check_rejects_a_wrong_field():
    kv = require_module("kubernetes_validate")
    deploy = copy.deepcopy(one(k8s_docs(), "Deployment", "epas-router"))
    deploy["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["tcpSocket"]["prot"] = 1
    with pytest.raises(kv.ValidationError):
        kv.validate(deploy, "1.30", strict=True)


def test_inference_pool_fits_its_schema():
    """The InferencePool against deploy/k8s/gateway-inference/inferencepool.schema.json (the v1
    CRD's fields this overlay uses, unknown ones refused); a misspelt field fails."""
    jsonschema = require_module("jsonschema")
    folder = K8S / "gateway-inference"
    schema = json.loads((folder / "inferencepool.schema.json").read_text())
    pool = yaml.safe_load((folder / "inferencepool.yaml").read_text())
    jsonschema.validate(pool, schema)
    wrong = copy.deepcopy(pool)
    wrong["spec"]["targetPort"] = wrong["spec"].pop("targetPorts")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wrong, schema)
