"""The docs and the deploy files stay true to the code (the docs tier: no broker, run once).

- docs/cli.md is regenerated from the click CLI (docs/gen_cli.py) and must match.
- Every ```python block of docs/user-guide.md runs, top to bottom in one module namespace
  (later blocks use earlier definitions); its asserts are the documented results. Blocks
  that must not run use another fence (```text, ```sh). They use LocalRunner, not Kafka.
- docs/operations.md lists every built-in metric, every setting and every dead-letter
  header the worker writes; the glossary defines the terms STYLE.md asks for.
- The Dockerfile, the compose stack, the Grafana dashboard and the Kubernetes manifests
  are checked structurally with PyYAML/JSON against the example app's real topic names and
  the real metric names, and, when the dev tools are installed (they are in the ``dev``
  extra; nothing is downloaded at run time), with hadolint, check-jsonschema (the
  compose-spec schema it vendors), kubernetes-validate (the Kubernetes schemas it
  vendors) and promql-parser.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from agentstream.observability.metrics import RuntimeMetrics
from agentstream.runtime.records import InputRecord
from agentstream.service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
DEPLOY = REPO / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
K8S_DIR = DEPLOY / "k8s"


# -- helpers ---------------------------------------------------------------------------


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, re.S | re.M)


def _tool(name: str) -> str | None:
    """A console script of the dev extra: next to this Python first, then on PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def _exposed_metric_names() -> set[str]:
    """Every sample name the built-in metrics can expose (with _total, _bucket...)."""
    names: set[str] = set()
    for family in RuntimeMetrics().registry.collect():
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count", "created")}
        else:
            names.add(family.name)
    return names


def _builtin_metrics() -> dict[str, str]:
    """Name as documented (counters with _total) -> Prometheus type."""
    documented = {}
    for family in RuntimeMetrics().registry.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        documented[name] = family.type
    return documented


def _example_app() -> Any:
    from examples.greeter import app

    return app


def _k8s_resources() -> list[dict[str, Any]]:
    resources = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(_read(path)):
            if doc:
                doc["__file__"] = path.name
                resources.append(doc)
    return resources


def _k8s(kind: str) -> list[dict[str, Any]]:
    return [r for r in _k8s_resources() if r["kind"] == kind]


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# -- docs ------------------------------------------------------------------------------


def test_cli_reference_is_generated_from_the_cli() -> None:
    spec = importlib.util.spec_from_file_location("agentstream_docs_gen_cli", DOCS / "gen_cli.py")
    assert spec is not None and spec.loader is not None
    gen_cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_cli)
    expected = gen_cli.render()
    assert _read(DOCS / "cli.md") == expected, (
        "docs/cli.md is out of date: run `python docs/gen_cli.py`"
    )
    for command in ("worker", "dev", "send", "tail", "broker", "demo"):
        assert f"## agentstream {command}" in expected


def test_user_guide_examples_run() -> None:
    """Scenario: run every python block of the user guide in order, as one module.
    We expect: no block raises; the asserts in the blocks hold."""
    blocks = _python_blocks(_read(DOCS / "user-guide.md"))
    assert len(blocks) >= 10, "the user guide lost its examples"
    code = "\n".join(blocks)
    assert "LocalRunner" in code
    for forbidden in ("Worker(", "EmbeddedBroker", "send_records", "kafka://"):
        assert forbidden not in code, f"user-guide examples must not need Kafka ({forbidden})"
    module = types.ModuleType("agentstream_docs_user_guide")
    sys.modules[module.__name__] = module  # event classes and pickled results resolve here
    try:
        for number, block in enumerate(blocks, start=1):
            try:
                exec(
                    compile(block, f"docs/user-guide.md python block {number}", "exec"),
                    vars(module),
                )
            except Exception as exc:
                raise AssertionError(
                    f"docs/user-guide.md python block {number} failed: {exc!r}\n{block}"
                ) from exc
    finally:
        sys.modules.pop(module.__name__, None)


def test_operations_lists_every_builtin_metric() -> None:
    text = _read(DOCS / "operations.md")
    for name, kind in _builtin_metrics().items():
        assert re.search(rf"\| `{name}` \| {kind} \|", text), f"{name} ({kind}) not documented"
    assert "`agentstream_user_<name>`" in text


def test_operations_lists_every_setting() -> None:
    text = _read(DOCS / "operations.md")
    for field in Settings.__dataclass_fields__:
        assert f"`AGENTSTREAM_{field.upper()}`" in text, f"setting {field} not documented"
    for protocol in ("SASL_SSL", "SASL_PLAINTEXT", "SSL", "SCRAM-SHA-512"):
        assert protocol in text


def test_operations_lists_every_dead_letter_header() -> None:
    """Scenario: call the worker's dead-letter path with a stub producer, for each reason.
    We expect: every header it writes is in the table of docs/operations.md."""
    from agentstream.service import output as output_module
    from agentstream.service.codecs import codec_for
    from agentstream.service.output import KafkaOutput

    sent: list[list[tuple[str, bytes]]] = []

    class StubProducer:
        async def send(self, topic: str, **kwargs: Any) -> asyncio.Future[None]:
            sent.append(kwargs["headers"])
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

    app: Any = SimpleNamespace(
        input_topic="in", dead_letter_topic="dead", settings=SimpleNamespace(error_policy="x")
    )
    producer: Any = StubProducer()
    codec = codec_for("json")
    output = KafkaOutput(app, producer, codec, codec, RuntimeMetrics(), None, lambda e: None)
    record = InputRecord("k", "v", "in/0/7", None, 0, 7)

    async def provoke() -> None:
        try:
            raise ValueError("boom")
        except ValueError as exc:
            error = exc
        await output.dead_letter("decode", b"k", b"v", error, source=("in", 0, 7))
        await output.dead_letter(
            "action", b"k", b"v", error, action="a", event_id="e", record=record, seq=1
        )
        await output.dead_letter("encode", b"k", None, error, event_id="e", record=record)

    asyncio.run(provoke())
    headers = {name for batch in sent for name, _ in batch}
    assert "agentstream-reason" in headers and "agentstream-source-offset" in headers
    text = _read(DOCS / "operations.md")
    for header in sorted(headers):
        assert f"| `{header}` |" in text, f"dead-letter header {header} not documented"
    for header in (output_module.HEADER_EVENT_ID, output_module.HEADER_WATERMARK):
        assert f"`{header}`" in text


def test_operations_states_the_delivery_guarantee_and_its_limits() -> None:
    text = _read(DOCS / "operations.md")
    assert "at_least_once" in text and "exactly_once" in text
    assert "read_committed" in text and "Standby replicas are not implemented" in text
    assert "refused" in text and "transactional" in text


def test_glossary_defines_the_core_terms() -> None:
    text = _read(DOCS / "glossary.md")
    for term in ("Event", "Action", "Key", "Seq", "Action state", "Replay", "Durable call"):
        assert re.search(rf"^\*\*{re.escape(term)}\b", text, re.M), f"glossary lacks {term!r}"


def test_relative_links_in_docs_resolve() -> None:
    pages = [*DOCS.glob("*.md"), K8S_DIR / "README.md", REPO / "README.md"]
    for page in pages:
        if not page.exists():
            continue
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", _read(page)):
            assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


# -- Dockerfile ------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_non_root_and_checks_health() -> None:
    text = _read(REPO / "Dockerfile")
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", code, re.M | re.I)
    assert len(stages) >= 2, "the image must be multi-stage"
    assert re.search(r"^COPY --from=", code, re.M), "the runtime stage copies the build"
    final = code[code.rindex("\nFROM ") :]
    users = re.findall(r"^USER\s+(\S+)", final, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must not run as root"
    assert re.search(r'^ENTRYPOINT \["agentstream"\]', final, re.M)
    assert re.search(r'^CMD \["worker", "examples\.greeter:app"\]', final, re.M)
    assert re.search(r'^VOLUME \["/data"\]', final, re.M)
    assert "AGENTSTREAM_DATA_DIR=/data" in final
    healthcheck = re.search(r"^HEALTHCHECK .*", re.sub(r"\\\n\s*", " ", final), re.M)
    assert healthcheck and "/health" in healthcheck.group() and "6066" in healthcheck.group()
    assert "urllib" in healthcheck.group(), "the health check needs no curl"
    assert "embedded" not in code and "calfkit" not in code, "no embedded broker in the image"
    ignore = _read(REPO / ".dockerignore").splitlines()
    for needed in ("!agentstream", "!examples", "!pyproject.toml"):
        assert needed in ignore


def test_hadolint_accepts_the_dockerfile() -> None:
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install -e '.[dev]')")
    result = subprocess.run(
        [hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- compose ---------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    return yaml.safe_load(_read(COMPOSE_DIR / "docker-compose.yml"))


def _compose_workers() -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in _compose()["services"].items()
        if svc.get("command", [None])[0] == "worker"
    }


def test_compose_runs_kraft_kafka_topic_init_and_two_workers() -> None:
    services = _compose()["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert "healthcheck" in kafka
    init = services["topic-init"]
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    workers = _compose_workers()
    assert len(workers) >= 2
    ports = set()
    for name, svc in workers.items():
        env = svc["environment"]
        assert env["AGENTSTREAM_BROKER"] == "kafka://kafka:9092", name
        assert env["AGENTSTREAM_WEB_HOST"] == "0.0.0.0", name
        assert svc["depends_on"]["topic-init"]["condition"] == "service_completed_successfully"
        assert any(str(v).endswith(":/data") for v in svc["volumes"]), f"{name}: no /data volume"
        port = str(env["AGENTSTREAM_WEB_PORT"])
        assert f"{port}:{port}" in svc["ports"], name
        ports.add(port)
        build = svc["build"]
        assert (COMPOSE_DIR / build["context"] / build["dockerfile"]).resolve() == (
            REPO / "Dockerfile"
        )
    assert len(ports) == len(workers), "workers need distinct web ports"


def test_compose_topic_init_creates_every_topic_of_the_app() -> None:
    app = _example_app()
    script = _compose()["services"]["topic-init"]["command"][0]
    lines = re.findall(r"^topic (\S+) --partitions \"?([^\"\s]+)\"?(.*)$", script, re.M)
    created = {name: (partitions, rest) for name, partitions, rest in lines}
    assert set(created) == set(app.topics()), "topic-init must create exactly the app's topics"
    assert created[app.dead_letter_topic][0] == "1"
    assert created[app.layout_topic] == ("1", " --config cleanup.policy=compact")
    for name in (app.input_topic, app.internal_topic, app.changelog_topic, app.output_topic):
        assert created[name][0] == "$$PARTITIONS", name
    assert "cleanup.policy=compact" in created[app.changelog_topic][1]
    # routed events carry old event times: stamped on append, retention cannot delete them
    assert "message.timestamp.type=LogAppendTime" in created[app.internal_topic][1]


def test_prometheus_scrapes_every_compose_worker() -> None:
    config = yaml.safe_load(_read(COMPOSE_DIR / "prometheus.yml"))
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    expected = {
        f"{name}:{svc['environment']['AGENTSTREAM_WEB_PORT']}"
        for name, svc in _compose_workers().items()
    }
    assert targets == expected


def test_grafana_is_provisioned_with_the_datasource_and_dashboard() -> None:
    services = _compose()["services"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in services["grafana"]["volumes"]}
    for source in ("./grafana/provisioning", "./grafana/dashboards"):
        assert (COMPOSE_DIR / source).is_dir() and source in mounts
    datasources = yaml.safe_load(
        _read(COMPOSE_DIR / "grafana/provisioning/datasources/prometheus.yml")
    )["datasources"]
    assert datasources[0]["type"] == "prometheus"
    assert datasources[0]["url"] == "http://prometheus:9090"
    providers = yaml.safe_load(
        _read(COMPOSE_DIR / "grafana/provisioning/dashboards/agentstream.yml")
    )["providers"]
    assert providers[0]["options"]["path"] == mounts["./grafana/dashboards"]


def test_compose_file_matches_the_compose_spec() -> None:
    if importlib.util.find_spec("check_jsonschema") is None:
        pytest.skip("check-jsonschema is not installed (pip install -e '.[dev]')")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE_DIR / "docker-compose.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- Grafana dashboard -----------------------------------------------------------------


def _dashboard_exprs() -> dict[str, list[str]]:
    dashboard = json.loads(_read(COMPOSE_DIR / "grafana/dashboards/agentstream.json"))
    exprs: dict[str, list[str]] = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            exprs.setdefault(panel["title"], []).append(target["expr"])
    return exprs


def test_dashboard_uses_only_real_metric_names() -> None:
    exposed = _exposed_metric_names()
    used = {
        name
        for exprs in _dashboard_exprs().values()
        for expr in exprs
        for name in re.findall(r"\bagentstream_[a-z_]+", expr)
    }
    assert used, "no agentstream metric in the dashboard"
    assert used <= exposed, f"unknown metrics: {sorted(used - exposed)}"


def test_dashboard_has_the_operational_panels() -> None:
    exprs = _dashboard_exprs()
    everything = "\n".join(e for es in exprs.values() for e in es)
    for metric in (
        "agentstream_events_processed_total",
        "agentstream_outputs_emitted_total",
        "agentstream_pending_inputs",
        "agentstream_busy_keys",
        "agentstream_consumer_lag",
        "agentstream_dead_letters_total",
        "agentstream_actions_replayed_total",
    ):
        assert metric in everything, f"no panel shows {metric}"
    assert re.search(
        r"histogram_quantile\(0\.\d+, .*agentstream_action_duration_seconds_bucket", everything
    )
    dashboard = json.loads(_read(COMPOSE_DIR / "grafana/dashboards/agentstream.json"))
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_dashboard_queries_parse() -> None:
    promql = pytest.importorskip("promql_parser")
    for title, exprs in _dashboard_exprs().items():
        for expr in exprs:
            concrete = (
                expr.replace("$__rate_interval", "1m")
                .replace("$instance", ".*")
                .replace("$job", ".*")
            )
            try:
                promql.parse(concrete)
            except ValueError as exc:
                raise AssertionError(f"panel {title!r}: bad PromQL {expr!r}: {exc}") from exc


# -- Kubernetes ------------------------------------------------------------------------


def test_k8s_statefulset_is_production_shaped() -> None:
    [sts] = _k8s("StatefulSet")
    spec = sts["spec"]
    template = spec["template"]
    assert _matches(spec["selector"]["matchLabels"], template["metadata"]["labels"])
    headless = [s for s in _k8s("Service") if s["metadata"]["name"] == spec["serviceName"]]
    assert headless and headless[0]["spec"]["clusterIP"] == "None"
    pod = template["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert pod["securityContext"]["runAsNonRoot"] is True
    [container] = pod["containers"]
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        http = container[probe]["httpGet"]
        wanted = "/live" if probe == "livenessProbe" else "/health"
        assert http["path"] == wanted and http["port"] in port_names, probe
    assert port_names[container["readinessProbe"]["httpGet"]["port"]] == 6066
    assert {"requests", "limits"} <= set(container["resources"])
    [claim] = spec["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/data"
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port_names["http"])
    config_maps = {c["metadata"]["name"]: c["data"] for c in _k8s("ConfigMap")}
    [ref] = [e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e]
    settings = config_maps[ref]
    assert settings["AGENTSTREAM_DATA_DIR"] == "/data"
    assert settings["AGENTSTREAM_WEB_HOST"] == "0.0.0.0"
    assert settings["AGENTSTREAM_WEB_PORT"] == str(port_names["http"])
    assert settings["AGENTSTREAM_BROKER"].startswith("kafka://")
    unknown = {
        k
        for k in settings
        if k.removeprefix("AGENTSTREAM_").lower() not in Settings.__dataclass_fields__
    }
    assert not unknown, f"ConfigMap keys that are no setting: {sorted(unknown)}"


def test_k8s_topics_match_the_app_and_the_partition_count() -> None:
    app = _example_app()
    topics = {t["metadata"]["name"]: t for t in _k8s("KafkaTopic")}
    assert set(topics) == set(app.topics()), "one KafkaTopic per topic of the app"
    [config_map] = _k8s("ConfigMap")
    partitions = int(config_map["data"]["AGENTSTREAM_PARTITIONS"])
    for name, topic in topics.items():
        assert "strimzi.io/cluster" in topic["metadata"]["labels"], name
        expected = 1 if name in (app.dead_letter_topic, app.layout_topic) else partitions
        assert topic["spec"]["partitions"] == expected, name
    assert topics[app.changelog_topic]["spec"]["config"]["cleanup.policy"] == "compact"
    [sts] = _k8s("StatefulSet")
    assert sts["spec"]["replicas"] <= partitions, "replicas beyond the partitions idle"


def test_k8s_topics_have_the_production_settings() -> None:
    """Scenario: the KafkaTopics a production cluster gets.

    We expect: 3 replicas and ``min.insync.replicas=2`` on every topic (an acked write
    survives the loss of a broker; the workers produce with ``acks=all``), the workers'
    own replication factor 3 for any topic they create, and the internal events topic
    stamped on append (routed events carry their input's event time, and time-based
    retention would delete a backfilled one before it is read, stalling its key)."""
    app = _example_app()
    topics = {t["metadata"]["name"]: t["spec"] for t in _k8s("KafkaTopic")}
    for name, spec in topics.items():
        assert spec["replicas"] == 3, name
        assert spec["config"]["min.insync.replicas"] == "2", name
    assert topics[app.internal_topic]["config"]["message.timestamp.type"] == "LogAppendTime"
    [config_map] = _k8s("ConfigMap")
    assert config_map["data"]["AGENTSTREAM_REPLICATION_FACTOR"] == "3"


def test_k8s_monitoring_and_disruption_budget_select_the_workers() -> None:
    [sts] = _k8s("StatefulSet")
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    [monitor] = _k8s("ServiceMonitor")
    selected = [
        s
        for s in _k8s("Service")
        if _matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    assert len(selected) == 1, "the ServiceMonitor must select exactly the metrics Service"
    service = selected[0]
    assert service["spec"].get("clusterIP") != "None"
    assert _matches(service["spec"]["selector"], pod_labels)
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in service_ports and endpoint["path"] == "/metrics"
    [pdb] = _k8s("PodDisruptionBudget")
    assert _matches(pdb["spec"]["selector"]["matchLabels"], pod_labels)


def test_k8s_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load(_read(K8S_DIR / "kustomization.yaml"))
    manifests = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests


@pytest.mark.parametrize("version", ["1.28", "1.37"])
def test_k8s_core_manifests_match_the_kubernetes_schemas(version: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    checked = 0
    for resource in _k8s_resources():
        name = resource.pop("__file__")
        if "." in resource["apiVersion"].split("/")[0]:
            continue  # CRDs and kustomize: no vendored schema; checked structurally above
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{name}: {resource['kind']}: {exc.message}") from exc
        checked += 1
    assert checked >= 5
