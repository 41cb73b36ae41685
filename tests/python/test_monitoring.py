"""deploy/prometheus and deploy/grafana against the real thing: promtool checks the config and
rules (and runs the rules' unit tests); a real Prometheus started here scrapes a running
`epas serve` while it serves traffic at two ratios, then every PromQL expression of the Grafana
dashboard must evaluate without error and the tokens/s query must give one series per ratio.
The dashboard may name only metrics that a live /metrics scrape exports."""

import itertools
import json
import math
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path

import pytest

from epas_testing import (
    ROOT,
    epas_server,
    exported_metrics,
    free_port,
    http,
    metric_names_in,
    require_module,
    require_tool,
    send_traffic,
    wait_until,
)

yaml = require_module("yaml")

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "epas-serve.json"
RATIOS = {0.0: "0.00", 0.5: "0.50"}
TOKS_PANEL = "Generation tokens/s by sharing ratio"


def dashboard():
    return json.loads(DASHBOARD.read_text())


def panels(board):
    for p in board["panels"]:
        yield p
        yield from p.get("panels", [])


def targets(board):
    """(panel title, expr) of every query of the dashboard."""
    for p in panels(board):
        for t in p.get("targets", []):
            yield p["title"], t["expr"]


def concrete(expr):
    """The PromQL Grafana sends: its variables replaced by values that match everything."""
    for var, value in (
        ("$__rate_interval", "1m"),
        ("$__interval", "15s"),
        ("$__range", "5m"),
        ("$instance", ".*"),
        ("$ratio", ".*"),
    ):
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unknown variable in {expr}"
    return expr


def test_promtool_check_config_and_rules():
    promtool = require_tool("promtool")
    out = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    rules = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
    assert rules
    out = subprocess.run(
        [promtool, "check", "rules", *map(str, rules)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_rule_unit_tests():
    promtool = require_tool("promtool")
    tests = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
    assert tests
    out = subprocess.run(
        [promtool, "test", "rules", *map(str, tests)],
        capture_output=True,
        text=True,
        cwd=PROMETHEUS_DIR / "tests",
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_dashboard_is_well_formed():
    board = dashboard()
    assert board["uid"] == "epas-serve" and board["title"]
    names = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "instance", "ratio"} <= names
    titles = [p["title"] for p in panels(board)]
    assert len(titles) == len(set(titles)), "panel titles must be unique"
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids))
    # Panels do not overlap on the 24-column grid.
    cells = set()
    for p in panels(board):
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24
        for x, y in itertools.product(range(g["x"], g["x"] + g["w"]), range(g["y"], g["y"] + g["h"])):
            assert (x, y) not in cells, f"{p['title']} overlaps another panel"
            cells.add((x, y))
    for p in panels(board):
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            assert p.get("targets"), p["title"]
    # What the issue asks the dashboard to show, by the metric each panel needs.
    used = set().union(*(metric_names_in(e) for _, e in targets(board)))
    for needed in (
        "epas_generation_tokens_total",
        "epas_time_to_first_token_seconds_bucket",
        "epas_inter_token_latency_seconds_bucket",
        "epas_requests_running",
        "epas_requests_waiting",
        "epas_kv_cache_blocks",
        "epas_kv_cache_bytes_per_token",
        "epas_batch_size_bucket",
        "epas_step_duration_seconds_bucket",
        "epas_requests_rejected_total",
        "epas_requests_cancelled_total",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
    ):
        assert needed in used, needed
    # Each replica gets its own row (repeated over the instance variable), and the fleet panels
    # break queue, KV use and prefix hits down by instance.
    repeated = [p for p in panels(board) if p["type"] == "row" and p.get("repeat")]
    assert [r["repeat"] for r in repeated] == ["instance"]
    assert "$instance" in repeated[0]["title"]
    by_instance = {t for t, e in targets(board) if "by (instance" in e}
    assert {"Queue per replica", "KV cache use per replica",
            "Prefix cache hit rate per replica and ratio"} <= by_instance


def test_grafana_provisioning_points_at_the_dashboard():
    prov = ROOT / "deploy" / "grafana" / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())
    assert ds["datasources"][0]["type"] == "prometheus"
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    dash = yaml.safe_load((prov / "dashboards" / "epas.yml").read_text())
    assert dash["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


@pytest.fixture(scope="module")
def stack():
    """`epas serve` and a real Prometheus scraping it every second with deploy's scrape job and
    rules, after traffic at ratios 0 and 0.5. Yields (epas URL, Prometheus URL, exported)."""
    prometheus = require_tool("prometheus")
    with epas_server("--allow-untrained-sharing") as base, tempfile.TemporaryDirectory() as tmp:
        config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(PROMETHEUS_DIR / f) for f in config["rule_files"]]
        job = next(j for j in config["scrape_configs"] if j["job_name"] == "epas")
        job["static_configs"] = [{"targets": [base.removeprefix("http://")]}]
        config["scrape_configs"] = [job]
        config_path = Path(tmp) / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        port = free_port()
        prom = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp}/data",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
        )
        purl = f"http://127.0.0.1:{port}"
        try:

            def up():
                assert prom.poll() is None, "prometheus exited"
                try:
                    r = query(purl, 'up{job="epas"} == 1')
                except OSError:
                    return False
                return len(r) == 1

            wait_until(up, 30, "prometheus to scrape epas", 0.2)
            sent = send_traffic(base, list(RATIOS), seconds=4)
            assert all(n >= 4 for n in sent.values()), sent
            for record in PER_RATIO_RECORDS:
                wait_until(lambda: per_ratio(purl, record), 30, record, 0.2)
            yield base, purl, exported_metrics(base)
        finally:
            prom.terminate()
            prom.wait(timeout=30)


PER_RATIO_RECORDS = (
    "sharing_ratio:epas_generation_tokens:rate1m",
    "sharing_ratio:epas_time_to_first_token_seconds:p50_1m",
    "sharing_ratio:epas_time_to_first_token_seconds:p99_1m",
    "sharing_ratio:epas_inter_token_latency_seconds:p50_1m",
    "sharing_ratio:epas_inter_token_latency_seconds:p99_1m",
)


def per_ratio(purl, record):
    """{ratio label: value} of a recording rule once it has a positive, finite value for each
    ratio that had traffic; None before."""
    values = {s["metric"]["sharing_ratio"]: float(s["value"][1]) for s in query(purl, record)}
    ok = all(0 < values.get(label, math.nan) < math.inf for label in RATIOS.values())
    return values if ok else None


def query(purl, expr, range_seconds=None):
    """The result of a Prometheus query; raises on an error answer."""
    if range_seconds:
        now = time.time()
        params = {"query": expr, "start": now - range_seconds, "end": now, "step": 2}
        path = "/api/v1/query_range"
    else:
        params = {"query": expr}
        path = "/api/v1/query"
    status, body = http("GET", purl + path + "?" + urllib.parse.urlencode(params), timeout=10)
    if status != 200 or body.get("status") != "success":
        raise AssertionError(f"{expr}: {status} {body}")
    return body["data"]["result"]


def test_dashboard_names_only_exported_metrics(stack):
    _, _, exported = stack
    board = dashboard()
    used = set()
    for _, expr in targets(board):
        used |= metric_names_in(expr)
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            used |= metric_names_in(var["definition"])
    missing = used - exported
    assert not missing, f"the dashboard names metrics the server does not export: {missing}"


def test_every_dashboard_expression_evaluates(stack):
    _, purl, _ = stack
    failures = []
    board = dashboard()
    for title, expr in targets(board):
        for range_seconds in (None, 30):
            try:
                query(purl, concrete(expr), range_seconds)
            except AssertionError as e:
                failures.append(f"{title}: {e}")
    assert not failures, "\n".join(failures)
    # The template variables' label_values() queries find values.
    for var in board["templating"]["list"]:
        if var["type"] != "query":
            continue
        metric, label = var["definition"].removeprefix("label_values(").rstrip(")").split(", ")
        status, body = http("GET", f"{purl}/api/v1/label/{label}/values?match[]={metric}")
        assert status == 200 and body["data"], var["name"]


def test_tokens_per_second_gives_one_series_per_ratio(stack):
    _, purl, _ = stack
    expr = next(e for t, e in targets(dashboard()) if t == TOKS_PANEL)
    result = query(purl, concrete(expr))
    labels = [s["metric"] for s in result]
    assert all(set(m) == {"sharing_ratio"} for m in labels), labels
    ratios = [m["sharing_ratio"] for m in labels]
    assert len(ratios) == len(set(ratios)), f"more than one series per ratio: {ratios}"
    busy = {s["metric"]["sharing_ratio"] for s in result if float(s["value"][1]) > 0}
    assert busy == set(RATIOS.values()), result


def test_recording_rules_give_per_ratio_figures(stack):
    _, purl, _ = stack
    for record in PER_RATIO_RECORDS:
        assert per_ratio(purl, record), record
    saved = {
        s["metric"]["sharing_ratio"]: float(s["value"][1])
        for s in query(purl, "sharing_ratio:epas_kv_cache_bytes_saved_per_token:max")
    }
    # SmolLM2: 15 of 30 layers keep no K: 15 * 192 values * 2 bytes (the default f16 cache).
    assert saved["0.00"] == 0 and saved["0.50"] == 15 * 192 * 2
