"""Deployments end to end, as an operator runs them: a real Prefect server on loopback, the
real S3 server, ``tiefvision setup-prefect``, ``prefect deploy`` of deployments/prefect.yaml,
a process worker on ``tiefvision-cpu``, and ``tiefvision trigger reindex --wait``; then the
web service's ``POST /api/flows/{name}/run`` (what the status page's buttons call) against
the same server and worker.

Every Prefect and TiefVision step runs as its own process with its own environment (as a
worker would), so nothing here depends on this test process's Prefect settings; the web
app alone runs in this process (FastAPI's test client), with its Prefect API pointed at the
test server for the length of its test.

Only the CPU pool has a worker here (no GPU, no Kubernetes): the nightly ``reindex``
deployment is on ``tiefvision-cpu`` and runs ingest, locate and encode as subflows inside
its own flow run, so its pool is the only one that matters. The GPU deployments are
checked for their routing (pool, job variables), not run.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import S3_KEY, S3_SECRET, S3Server, free_port
from tiefvision_core.catalog.synthetic import generate_catalog

pytestmark = [pytest.mark.slow, pytest.mark.s3, pytest.mark.timeout(480)]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CRON, TIMEZONE = "30 3 * * 1-5", "America/New_York"  # not the defaults: proves the env vars
PREFECT_YAML = "deployments/prefect.yaml"
GPU_STAGES = {"encode", "crops", "locate", "train-locator", "train-triplets"}
CPU_STAGES = {"ingest", "rebuild-index", "reindex", "gc"}


@dataclass
class Stack:
    api: str
    env: dict[str, str]
    store_url: str
    bucket: str
    images: Path
    logs: Path


def _cmd(tool: str, line: str) -> list[str]:
    """A command line of one of this environment's console scripts."""
    return [str(BIN / tool), *shlex.split(line)]


def _clean_environment() -> dict[str, str]:
    """This process's environment without anything Prefect, TiefVision or S3 related."""
    prefixes = ("PREFECT_", "TIEFVISION_", "AWS_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A long-running process in its own session, so teardown can end it with its children
    (the worker's flow-run processes, the server's web process)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            args,
            env=env,
            cwd=log.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _run(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


def _ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"{done.args}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done.stdout


def _wait_healthy(api: str, server: subprocess.Popen, log: Path, seconds: float = 150) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"prefect server exited: {log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"prefect server not healthy in {seconds} s: {log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def stack(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Server → setup-prefect → (deploy ∥ worker); every process ended however it goes."""
    root = tmp_path_factory.mktemp("deployments")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    bucket = s3_server.new_bucket()
    images = root / "catalog" / "images"
    generate_catalog(root / "catalog", products=4, views=2, seed=3)
    env = {
        **_clean_environment(),
        "PREFECT_HOME": str(root / "prefect-home"),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{root / 'prefect.db'}",
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_CLI_PROMPT": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
        # what a worker host has: the store, its endpoint and credentials
        "TIEFVISION_STORE_URL": f"s3://{bucket}/tiefvision",
        "TIEFVISION_S3_ENDPOINT_URL": s3_server.endpoint,
        "AWS_ACCESS_KEY_ID": S3_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "TIEFVISION_WORKERS": "2",
        # what the deployer sets for the nightly schedule
        "TIEFVISION_IMAGES": str(images),
        "TIEFVISION_REINDEX_CRON": CRON,
        "TIEFVISION_REINDEX_TIMEZONE": TIMEZONE,
    }
    processes: list[subprocess.Popen] = []
    try:
        server_log = root / "server.log"
        serve = _cmd("prefect", f"server start --host 127.0.0.1 --port {port}")
        processes.append(_start(serve, env, server_log))
        _wait_healthy(api, processes[0], server_log)
        _ok(_run(_cmd("tiefvision", "setup-prefect"), env))
        work = _cmd("prefect", "worker start --pool tiefvision-cpu --type process --name e2e")
        processes.append(_start(work, env, root / "worker.log"))
        _ok(_run(_cmd("prefect", "--no-prompt deploy --all --prefect-file " + PREFECT_YAML), env))
        yield Stack(api, env, env["TIEFVISION_STORE_URL"], bucket, images, root)
    finally:
        for process in reversed(processes):
            _stop(process)


def _deployments(api: str) -> dict[str, dict]:
    """Every deployment by its full name, read back through the REST API."""
    flows = {f["id"]: f["name"] for f in httpx.post(f"{api}/flows/filter", json={}).json()}
    found = httpx.post(f"{api}/deployments/filter", json={}).json()
    return {f"{flows[d['flow_id']]}/{d['name']}": d for d in found}


def test_every_flow_is_deployed_routed_and_the_nightly_is_on_its_cron(stack: Stack) -> None:
    deployments = _deployments(stack.api)
    assert {name.split("/")[0] for name in deployments} == GPU_STAGES | CPU_STAGES
    for name, deployment in deployments.items():
        flow = name.split("/")[0]
        pool = "tiefvision-gpu" if flow in GPU_STAGES else "tiefvision-cpu"
        assert deployment["work_pool_name"] == pool, name
        assert deployment["entrypoint"].startswith("flows."), name  # the installed package
        assert deployment["pull_steps"] == [], name
        assert deployment["description"].strip(), name
        assert deployment["enforce_parameter_schema"] is True, name
        properties = deployment["parameter_openapi_schema"]["properties"]
        assert properties and all(p.get("description") for p in properties.values()), name
        if flow in GPU_STAGES:
            assert deployment["job_variables"] == {"gpus": 1}, name
        else:
            assert not deployment["schedules"] or flow == "reindex", name

    nightly = deployments["reindex/nightly"]
    (schedule,) = nightly["schedules"]
    assert schedule["active"] is True
    assert schedule["schedule"]["cron"] == CRON
    assert schedule["schedule"]["timezone"] == TIMEZONE
    assert nightly["parameters"] == {"images": str(stack.images)}

    pools = {p["name"]: p for p in httpx.post(f"{stack.api}/work_pools/filter", json={}).json()}
    assert pools["tiefvision-cpu"]["type"] == "process"
    gpu = pools["tiefvision-gpu"]
    assert gpu["type"] == "kubernetes"
    container = gpu["base_job_template"]["job_configuration"]["job_manifest"]["spec"]["template"][
        "spec"
    ]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpus }}"
    assert gpu["base_job_template"]["variables"]["properties"]["gpus"]["default"] == 1
    for pool in pools.values():
        env = pool["base_job_template"]["variables"]["properties"]["env"]["default"]
        assert env == {"PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": "s3-bucket/tiefvision-results"}


def test_trigger_reindex_runs_on_the_worker_and_publishes_a_searchable_index(
    stack: Stack, s3_env: S3Server
) -> None:
    from tiefvision_core.index.search import search_by_id
    from tiefvision_core.storage.urls import open_store
    from tiefvision_core.vector_index.versions import open_index

    started = time.monotonic()
    trigger = ["trigger", "reindex", "--param", f"images={stack.images}", "--param"]
    trigger += ["batch_size=4", "--wait", "--timeout", "360", "--json"]
    done = _run([str(BIN / "tiefvision"), *trigger], stack.env, timeout=400)
    worker_log = (stack.logs / "worker.log").read_text(errors="replace")[-4000:]
    assert done.returncode == 0, f"{done.stdout}{done.stderr}\nworker:\n{worker_log}"
    run = json.loads(done.stdout)
    assert run["deployment"] == "reindex/nightly" and run["state"] == "COMPLETED", run
    summary = run["result"]  # read back from the S3 result block, as JSON
    assert summary["images"] == 8 and summary["new"] == 8 and summary["encoded"] == 8
    (index,) = summary["indexes"]
    assert index["space"] == "unsupervised" and index["size"] == 8
    assert time.monotonic() - started < 360

    store = open_store(stack.store_url)
    opened = open_index(store, "unsupervised")
    assert opened.version == index["after"]
    first = opened.ids["image_id"].iloc[0]
    result = search_by_id(opened, first, k=3)
    assert result.index_version == index["after"]
    hits = [hit.image_id for hit in result.results]
    assert len(hits) == 3 and first not in hits
    assert set(hits) <= set(opened.ids["image_id"])
    scores = [hit.score for hit in result.results]
    assert scores == sorted(scores, reverse=True)

    # Flow results only (reindex and its ingest/encode subflows), each a small JSON
    # document: no task result, no pickle.
    results = open_store(f"s3://{stack.bucket}")
    keys = [info.key for info in results.list("prefect-results/")]
    assert 1 <= len(keys) <= 4, keys
    for key in keys:
        payload = results.get_bytes(key)
        assert len(payload) < 64 * 1024
        assert "__class__" in json.loads(payload)


def test_trigger_says_what_to_do_on_a_wrong_deployment_or_parameter(stack: Stack) -> None:
    tiefvision = str(BIN / "tiefvision")
    unknown = _run([tiefvision, "trigger", "reindexx"], stack.env)
    assert unknown.returncode == 2
    assert "no deployment 'reindexx'" in unknown.stderr and "prefect deploy" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    ambiguous = _run([tiefvision, "trigger", "on-demand"], stack.env)
    assert ambiguous.returncode == 2 and "give the full FLOW/DEPLOYMENT name" in ambiguous.stderr

    wrong = _run(
        [tiefvision, "trigger", "rebuild-index", "--param", "space=both", "--param", "keep=x"],
        stack.env,
    )
    assert wrong.returncode == 2
    assert "space" in wrong.stderr and "'both' is not one of" in wrong.stderr
    assert "keep" in wrong.stderr

    down = _run(
        [tiefvision, "trigger", "reindex"],
        {**stack.env, "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"},
    )
    assert down.returncode == 2 and "does not answer" in down.stderr


FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _flow_run_ids(api: str, deployment_id: str) -> set[str]:
    body = {"deployments": {"id": {"any_": [deployment_id]}}}
    return {run["id"] for run in httpx.post(f"{api}/flow_runs/filter", json=body).json()}


def _wait_final(api: str, flow_run_id: str, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        run = httpx.get(f"{api}/flow_runs/{flow_run_id}").json()
        if run["state"] and run["state"]["type"] in FINAL_STATES:
            return run
        if time.monotonic() > deadline:
            pytest.fail(f"flow run {flow_run_id} not final in {seconds} s: {run['state']}")
        time.sleep(1)


WEB_TOKEN = "e2e-web-token-0123456789"


@contextmanager
def _web_app(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """The web service over the stack's store, in production mode with a write token, its
    Prefect API pointed at the stack's server for as long as the block lasts."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tiefvision_core.config import Settings
    from tiefvision_web import create_app

    settings = Settings(
        store_url=stack.store_url,
        database_url=f"sqlite:///{stack.logs / 'web-annotations.sqlite'}",
        s3_endpoint_url=stack.env["TIEFVISION_S3_ENDPOINT_URL"],
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
        api_token=WEB_TOKEN,
        production=True,
    )
    # The web service reads PREFECT_API_URL like any Prefect client (the compose and k8s
    # files set it); this process's Prefect settings were fixed at import, so set both.
    monkeypatch.setenv("PREFECT_API_URL", stack.api)
    with temporary_settings(updates={PREFECT_API_URL: stack.api}):
        yield create_app(settings, reload_interval=0.1)


def test_web_api_starts_a_deployment_run_on_the_worker(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``POST /api/flows/{name}/run`` of the web service (what the status page's buttons
    call) against the same server and worker: refused without the token, otherwise a run
    of the right deployment that the worker takes to Completed; the status page sees it."""
    from fastapi.testclient import TestClient

    ingest = _deployments(stack.api)["ingest/on-demand"]
    before = _flow_run_ids(stack.api, ingest["id"])
    body = {"parameters": {"images": str(stack.images), "chunk_size": 4}}

    with _web_app(stack, monkeypatch) as app, TestClient(app) as client:
        refused = client.post("/api/flows/ingest/on-demand/run", json=body)
        assert refused.status_code == 401, refused.text
        assert refused.headers["www-authenticate"] == "Bearer"
        wrong = client.post(
            "/api/flows/ingest/on-demand/run", json=body, headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 403, wrong.text
        assert _flow_run_ids(stack.api, ingest["id"]) == before  # nothing was started

        answer = client.post(
            "/api/flows/ingest/on-demand/run",
            json=body,
            headers={"Authorization": f"Bearer {WEB_TOKEN}"},
        )
        assert answer.status_code == 202, answer.text
        started = answer.json()
        assert started["deployment"] == "ingest/on-demand"
        assert started["state"] in {"SCHEDULED", "PENDING"}, started
        assert _flow_run_ids(stack.api, ingest["id"]) == before | {started["flow_run_id"]}

        run = _wait_final(stack.api, started["flow_run_id"], 300)
        worker_log = (stack.logs / "worker.log").read_text(errors="replace")[-4000:]
        assert run["state"]["type"] == "COMPLETED", f"{run['state']}\nworker:\n{worker_log}"
        assert run["deployment_id"] == ingest["id"]
        assert run["parameters"] == body["parameters"]

        # The run's work is in the store the web service serves, and its status page lists
        # the run (through the same PREFECT_API_URL).
        time.sleep(0.2)  # past reload_interval: the catalog pointer is read again
        status = client.get("/api/status").json()
        assert status["catalog"]["ok"] == 8, status["catalog"]
        prefect = status["prefect"]
        assert prefect["configured"] and "ingest/on-demand" in prefect["deployments"], prefect
        (listed,) = [r for r in prefect["runs"] if r["name"] == started["flow_run_name"]]
        assert listed["deployment"] == "ingest/on-demand" and listed["state"] == "COMPLETED"
        assert listed["flow"] == "ingest"


def test_status_page_lists_runs_and_its_button_starts_a_deployment(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, page
) -> None:
    """The status page in Chromium against the real Prefect server: a button per deployment,
    the recent runs; typing the token and clicking *Run reindex/nightly* starts a run on the
    worker (its parameters are the deployment's defaults), which the page then lists."""
    from playwright.sync_api import expect

    from tests.browser import live_server

    nightly = _deployments(stack.api)["reindex/nightly"]
    before = _flow_run_ids(stack.api, nightly["id"])
    with _web_app(stack, monkeypatch) as app, live_server(app) as url:
        page.goto(url + "/status")
        buttons = page.locator("button.trigger")
        expect(buttons).to_have_count(len(_deployments(stack.api)))
        names = {b.get_attribute("data-name") for b in buttons.all()}
        assert names == set(_deployments(stack.api)), names
        runs = page.locator("table tr", has_text="COMPLETED")
        expect(runs.first).to_be_visible()  # the runs the earlier tests took to Completed

        page.fill("#token", WEB_TOKEN)
        page.press("#token", "Tab")  # the page keeps the token once it is entered
        page.click("button.trigger[data-name='reindex/nightly']")
        expect(page.locator("#message")).to_contain_text("Started reindex/nightly")
        (started,) = _flow_run_ids(stack.api, nightly["id"]) - before
        run = _wait_final(stack.api, started, 300)
        assert run["state"]["type"] == "COMPLETED", run["state"]
        assert run["parameters"]["images"] == str(stack.images)  # the deployment's default

        page.reload()
        expect(page.locator("table tr", has_text=run["name"])).to_have_count(1)
        cells = page.locator("table tr", has_text=run["name"]).locator("td").all_inner_texts()
        assert cells[1:4] == ["reindex", "reindex/nightly", "COMPLETED"], cells
        # Its subflows are listed under their flow names, with no deployment.
        flows = {
            tuple(row.locator("td").all_inner_texts()[1:3])
            for row in page.locator("table tr", has_text="COMPLETED").all()
        }
        assert ("ingest", "") in flows, flows
