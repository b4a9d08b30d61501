"""infra/ checked offline against the published schemas and against the code it runs.

Schemas: Compose Specification (vendored by check-jsonschema) and Kubernetes (bundled by
kubernetes-validate); both ship in the wheels, so nothing is downloaded here. The
consistency checks catch what a schema cannot: a variable no code reads, a work pool no
deployment uses, a port nothing listens on, a file the image build cannot find.
"""

from __future__ import annotations

import copy
import fnmatch
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.infra.infra_files import (
    INFRA,
    K8S,
    ROOT,
    command_words,
    compose,
    compose_interpolations,
    dockerfile,
    dockerfile_copy_sources,
    dockerfile_env_names,
    env_example,
    interpolate,
    is_web,
    is_worker,
    k8s_containers,
    k8s_documents,
    k8s_services,
    k8s_web,
    k8s_workers,
    option,
    prefect_yaml,
    prefect_yaml_env,
    serve_options,
    settings_env_names,
    web_api_paths,
)

K8S_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]  # oldest we claim, newest
POOLS = {"tiefvision-cpu": "cpu", "tiefvision-gpu": "cuda"}  # pool -> TIEFVISION_DEVICE
PUBLISHED = {"minio": {9000, 9001}, "postgres": {5432}, "prefect-server": {4200}, "web": {8000}}
# Ports and variables the upstream images define themselves (their documentation).
IMAGE_PORTS = {"minio/minio": {9000}, "postgres": {5432}}
IMAGE_ENV = {
    "minio/minio": {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"},
    "postgres": {"POSTGRES_PASSWORD", "POSTGRES_USER", "POSTGRES_DB"},
}
OWN_PREFIXES = ("TIEFVISION_", "AWS_")
COMPOSE_CHECK = [
    sys.executable,
    "-m",
    "check_jsonschema",
    "--builtin-schema",
    "vendor.compose-spec",
]
_URL = re.compile(r"\b[a-z][\w+]*://(?:[^@/\s]*@)?([\w.-]+):(\d+)")


# -- helpers --------------------------------------------------------------------------------
def _services() -> dict[str, dict]:
    return compose()["services"]


def _image_repo(service: dict) -> str:
    return service.get("image", "").rsplit(":", 1)[0]


def _environment(service: dict, given: dict[str, str] | None = None) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: interpolate(value, given) for name, value in env.items()}


def _workers() -> dict[str, dict]:
    return {
        name: service for name, service in _services().items() if is_worker(command_words(service))
    }


def _web_services() -> dict[str, dict]:
    return {name: s for name, s in _services().items() if is_web(command_words(s))}


def _listens_on(service: dict) -> set[int]:
    """Ports a compose service serves: its image's defaults plus what its command asks."""
    from prefect.settings import get_current_settings

    words = command_words(service)
    ports = set(IMAGE_PORTS.get(_image_repo(service), ()))
    if "--port" in words:
        ports.add(int(option(words, "--port")))
    if "--console-address" in words:
        ports.add(int(option(words, "--console-address").rsplit(":", 1)[1]))
    if "--with-healthcheck" in words:
        ports.add(get_current_settings().worker.webserver.port)
    return ports


def _k8s_env(container: dict) -> dict[str, str]:
    """What a container sees: its ConfigMaps and Secrets (envFrom), then its own env."""
    objects = {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in k8s_documents()}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env |= objects["ConfigMap", source["configMapRef"]["name"]]["data"]
        else:
            env |= objects["Secret", source["secretRef"]["name"]]["stringData"]
    return env | {item["name"]: item["value"] for item in container.get("env", [])}


def _all_env_names() -> set[str]:
    names = {name for service in _services().values() for name in _environment(service)}
    names |= {name for container in k8s_containers() for name in _k8s_env(container)}
    return names | dockerfile_env_names()


def _settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    from tiefvision_core.config import load_settings

    for name in list(os.environ):
        if name.startswith(OWN_PREFIXES):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def _offline_env() -> dict[str, str]:
    """Any attempt to reach the network fails fast (unroutable proxy)."""
    proxy = "http://127.0.0.1:9"
    return os.environ | {
        "HTTP_PROXY": proxy,
        "HTTPS_PROXY": proxy,
        "http_proxy": proxy,
        "https_proxy": proxy,
        "NO_PROXY": "",
        "no_proxy": "",
    }


def _check_compose_schema(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*COMPOSE_CHECK, str(path)],
        capture_output=True,
        text=True,
        env=_offline_env(),
        timeout=120,
    )


# -- published schemas ----------------------------------------------------------------------
def test_compose_file_matches_the_compose_specification(tmp_path) -> None:
    result = _check_compose_schema(INFRA / "compose.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    # The validator really validates: a misspelt service key is refused.
    broken = copy.deepcopy(compose())
    broken["services"]["minio"]["imagee"] = broken["services"]["minio"].pop("image")
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(broken))
    assert _check_compose_schema(tmp_path / "compose.yaml").returncode != 0


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_match_the_kubernetes_schemas(version: str) -> None:
    for name, doc in k8s_documents():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {'.'.join(map(str, exc.path))}: {exc.message}")


def test_k8s_strict_validation_refuses_unknown_fields() -> None:
    deployment = next(doc for _, doc in k8s_documents() if doc["kind"] == "Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest_and_the_image() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(manifests)
    renamed = {image["name"] for image in kustomization["images"]}
    assert {c["image"].split(":")[0] for c in k8s_containers()} == renamed


def test_secret_holds_placeholders_only() -> None:
    secrets = [doc for _, doc in k8s_documents() if doc["kind"] == "Secret"]
    assert secrets and all("data" not in s for s in secrets)
    for secret in secrets:
        for name, value in secret["stringData"].items():
            assert "REPLACE" in value, f"{name} looks like a real credential"


# -- variables ------------------------------------------------------------------------------
def test_tiefvision_and_aws_variables_are_read_by_the_code() -> None:
    known = settings_env_names() | prefect_yaml_env()
    named = {name for name in _all_env_names() if name.startswith(OWN_PREFIXES)}
    assert named and named <= known, f"read by nothing: {sorted(named - known)}"


def test_prefect_variables_are_prefect_settings() -> None:
    import prefect.settings

    named = {name for name in _all_env_names() if name.startswith("PREFECT_")}
    unknown = {name for name in named if not hasattr(prefect.settings, name)}
    assert named and not unknown, f"not Prefect settings: {sorted(unknown)}"


@pytest.mark.parametrize("name", sorted(compose()["services"]))
def test_other_compose_variables_are_read_by_their_service(name: str) -> None:
    service = _services()[name]
    read = " ".join(command_words(service) + command_words(service, "entrypoint"))
    for volume in service.get("volumes", []):
        source = Path(INFRA, volume.split(":")[0])
        if volume.startswith(".") and source.is_file():
            read += source.read_text()
    for variable in _environment(service):
        if variable.startswith((*OWN_PREFIXES, "PREFECT_")):
            continue
        assert variable in IMAGE_ENV.get(_image_repo(service), set()) or re.search(
            rf"\$\{{?{variable}\b", read
        ), f"{name}: nothing reads {variable}"


@pytest.mark.parametrize("name", ["worker-cpu", "worker-gpu"])
def test_compose_worker_environment_is_valid_settings(name, monkeypatch) -> None:
    from tiefvision_core.annotations.database import database_url_for

    service = _services()[name]
    settings = _settings_from(_environment(service), monkeypatch)
    assert settings.store_url.startswith("s3://")
    assert settings.s3_endpoint_url == "http://minio:9000"
    assert settings.aws_access_key_id and settings.aws_secret_access_key
    assert settings.device == POOLS[option(command_words(service), "--pool")]
    assert database_url_for(settings).drivername == "postgresql+psycopg"


def test_k8s_worker_environment_is_valid_settings(monkeypatch) -> None:
    from tiefvision_core.annotations.database import database_url_for

    for container in k8s_workers():
        settings = _settings_from(_k8s_env(container), monkeypatch)
        assert settings.store_url.startswith("s3://") and settings.s3_endpoint_url
        assert settings.device == POOLS[option(container["command"], "--pool")]
        assert database_url_for(settings).drivername == "postgresql+psycopg"


def test_env_example_lists_every_compose_variable() -> None:
    example = env_example()
    assert set(example) == set(compose_interpolations())
    assert all(example.values())
    assert ".env" in (INFRA / ".gitignore").read_text().split()
    assert "infra/.env" in (ROOT / ".dockerignore").read_text().split()


# -- the web service -----------------------------------------------------------------------
def _check_serve_command(words: list[str], where: str) -> int:
    """``tiefvision serve`` with options it has, on every interface, on its default port."""
    options = serve_options()
    assert is_web(words), where
    flags = [word for word in words[2:] if word.startswith("-")]
    assert flags and set(flags) <= set(options), f"{where}: {flags} vs {sorted(options)}"
    assert option(words, "--host") == "0.0.0.0", f"{where}: only reachable inside its container"
    port = int(option(words, "--port"))
    assert port == options["--port"], f"{where}: serve's default port is {options['--port']}"
    return port


def _check_web_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The same store and database as the workers, a token, writes refused without it."""
    from tiefvision_core.annotations.database import database_url_for

    settings = _settings_from(env, monkeypatch)
    assert settings.store_url.startswith("s3://") and settings.s3_endpoint_url
    assert settings.aws_access_key_id and settings.aws_secret_access_key
    assert database_url_for(settings).drivername == "postgresql+psycopg"
    assert settings.api_token is not None and settings.production is True
    assert env["PREFECT_API_URL"].endswith("/api")  # the status page and flow buttons


def test_compose_web_service_serves_the_app_with_the_workers_settings(
    monkeypatch, tmp_path
) -> None:
    (name,) = _web_services()
    web = _services()[name]
    port = _check_serve_command(command_words(web), name)
    assert web["image"] == _services()["worker-cpu"]["image"] == "tiefvision:cpu"
    # As a user runs it: infra/.env copied from .env.example (its token is long enough).
    env = _environment(web, env_example())
    worker_env = _environment(_services()["worker-cpu"], env_example())
    shared = {k for k in worker_env if k.startswith(OWN_PREFIXES) or k == "PREFECT_API_URL"}
    assert {k: env[k] for k in shared - {"TIEFVISION_DEVICE"}} == {
        k: worker_env[k] for k in shared - {"TIEFVISION_DEVICE"}
    }
    _check_web_settings(env, monkeypatch)
    assert web["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert web["depends_on"]["postgres"]["condition"] == "service_healthy"
    (health,) = re.findall(r"http://127\.0\.0\.1:(\d+)(/[\w/]*)", str(web["healthcheck"]))
    assert int(health[0]) == port
    assert "GET" in web_api_paths(tmp_path).get(health[1], set()), f"no GET {health[1]}"


def test_k8s_web_deployment_and_service_match_serve(monkeypatch, tmp_path) -> None:
    (container,) = k8s_web()
    port = _check_serve_command(container["command"], "web.yaml")
    (container_port,) = container["ports"]
    assert container_port["containerPort"] == port
    paths = web_api_paths(tmp_path)
    for probe in ("readinessProbe", "livenessProbe"):
        check = container[probe]["httpGet"]
        assert "GET" in paths.get(check["path"], set()), f"{probe}: no GET {check['path']}"
        assert check["port"] in (container_port["name"], port), probe
    _check_web_settings(_k8s_env(container), monkeypatch)
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})

    (deployment,) = [
        doc
        for _, doc in k8s_documents()
        if doc["kind"] == "Deployment"
        and container in doc["spec"]["template"]["spec"]["containers"]
    ]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    (service,) = k8s_services()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (service_port,) = service["spec"]["ports"]
    assert service_port["port"] == port
    assert service_port["targetPort"] in (container_port["name"], port)


def test_web_health_answers_before_anything_is_indexed(tmp_path) -> None:
    """The health check the compose file and the probes use passes on a fresh stack."""
    from fastapi.testclient import TestClient

    from tiefvision_core.config import Settings
    from tiefvision_web import create_app

    with TestClient(create_app(Settings(store_url=str(tmp_path / "store")))) as client:
        answer = client.get("/api/health")
    assert answer.status_code == 200 and answer.json()["status"] == "ok"


# -- work pools and GPUs --------------------------------------------------------------------
def test_work_pools_match_the_deployments() -> None:
    compose_pools = {option(command_words(s), "--pool") for s in _workers().values()}
    k8s_pools = {option(c["command"], "--pool") for c in k8s_workers()}
    assert compose_pools == k8s_pools == set(POOLS)
    deployed = {d["work_pool"]["name"] for d in prefect_yaml()["deployments"]}
    # The GPU pool joins prefect.yaml with the GPU deployments; every pool used has workers.
    assert "tiefvision-cpu" in deployed and deployed <= set(POOLS)
    start = (INFRA / "local" / "start.sh").read_text()
    assert set(re.search(r"^POOLS=\((.*)\)$", start, re.MULTILINE)[1].split()) == set(POOLS)
    cmd = next(args for instruction, args in dockerfile() if instruction == "CMD")
    assert option(yaml.safe_load(cmd), "--pool") == "tiefvision-cpu"


def test_gpu_pool_is_a_process_pool_like_its_workers() -> None:
    """setup-prefect makes tiefvision-gpu a Kubernetes pool unless told otherwise; the
    workers here (compose, k8s, local) are process workers, so every setup must say so."""
    types = {option(command_words(s), "--type") for s in _workers().values()}
    types |= {option(c["command"], "--type") for c in k8s_workers()}
    assert types == {"process"}
    setup = " ".join(command_words(_services()["prefect-setup"]))
    for text in (setup, (INFRA / "local" / "start.sh").read_text()):
        assert "setup-prefect --gpu-pool-type process" in text


def test_gpu_workers_get_a_gpu() -> None:
    gpu = _services()["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert gpu["build"]["args"]["VARIANT"] == "gpu" and "gpu" in gpu["profiles"]
    for container in k8s_containers():
        gpus = container["resources"].get("limits", {}).get("nvidia.com/gpu")
        on_gpu_pool = option(container["command"], "--pool") == "tiefvision-gpu"
        assert gpus == (1 if on_gpu_pool else None), container["image"]


# -- ports, volumes, files ------------------------------------------------------------------
def test_published_ports_are_the_ones_services_listen_on() -> None:
    published: dict[str, set[int]] = {}
    for name, service in _services().items():
        for mapping in service.get("ports", []):
            host_ip, host_port, container_port = mapping.split(":")
            assert host_ip == "127.0.0.1", f"{name}: {mapping} is reachable from the network"
            assert host_port == container_port, mapping
            assert int(container_port) in _listens_on(service), f"{name}: {mapping}"
            published.setdefault(name, set()).add(int(container_port))
    assert published == PUBLISHED


def test_urls_point_at_a_service_and_the_port_it_listens_on() -> None:
    services = _services()
    texts = [
        text
        for service in services.values()
        for text in [*_environment(service).values(), *command_words(service, "entrypoint")]
    ]
    texts += [value for container in k8s_containers() for value in _k8s_env(container).values()]
    checked = 0
    for text in texts:
        for host, port in _URL.findall(text):
            target = host.split(".")[0]  # k8s: minio.tiefvision.svc.cluster.local
            assert target in services, f"{text}: no service {target!r}"
            assert int(port) in _listens_on(services[target]), f"{text}: {target} port {port}"
            checked += 1
    assert checked >= 5
    for name, service in services.items():
        for port in re.findall(r"127\.0\.0\.1:(\d+)", str(service.get("healthcheck", {}))):
            assert int(port) in _listens_on(service), f"{name} healthcheck on {port}"


def test_volumes_are_declared_and_bind_mounts_exist() -> None:
    declared = set(compose().get("volumes") or {})
    used: set[str] = set()
    for name, service in _services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (INFRA / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
    assert used == declared


def test_builds_use_the_repository_and_a_dockerfile_stage() -> None:
    stages = {args.split()[-1] for word, args in dockerfile() if word == "FROM" and " AS " in args}
    builds = [s["build"] for s in _services().values() if "build" in s]
    assert {b["args"]["VARIANT"] for b in builds} == {"cpu", "gpu"}
    for build in builds:
        context = (INFRA / build["context"]).resolve()
        assert context == ROOT and (context / build["dockerfile"]).is_file()
        assert f"base-{build['args']['VARIANT']}" in stages


def test_dockerfile_copies_existing_files_that_are_not_ignored() -> None:
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = dockerfile_copy_sources()
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        parts = Path(source).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        hits = [p for p in ignored for prefix in prefixes if fnmatch.fnmatch(prefix, p)]
        assert not hits, f"COPY {source}: excluded by .dockerignore {hits}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    needed = packages | {"pyproject.toml", "constraints.txt", project["project"]["readme"]}
    assert needed | {"deployments"} <= set(sources)


def test_shell_scripts_parse_and_are_executable() -> None:
    scripts = sorted(INFRA.rglob("*.sh"))
    assert len(scripts) >= 5
    for script in scripts:
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script}: {result.stderr}"
    for name in ("local/start.sh", "local/stop.sh", "postgres/init-databases.sh"):
        assert os.access(INFRA / name, os.X_OK), f"{name} is not executable"
