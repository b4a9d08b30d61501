"""What the API tells and takes from whom (issue 28, item 7): the store's address only to
the token's holders; writes only from this server's pages (or a listed origin) and only as
JSON, so a page elsewhere cannot make a browser start a flow on a server without a token."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tiefvision_web import create_app

TOKEN = "guards-token-0123456789abcdef"
EVIL = "https://evil.example"


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("web-guards") / "annotations.sqlite"


@pytest.fixture(scope="module")
def open_server(indexed_catalog, database) -> TestClient:
    """Development mode, no token: writes are open — to this server's own pages."""
    settings = indexed_catalog.settings(database, cors_origins="https://shop.example")
    return TestClient(create_app(settings))


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The flow runs the trigger route starts (through a stand-in of the Prefect client)."""
    from deployments.client import TriggeredRun

    started: list[str] = []

    def trigger(name: str, parameters: dict, **options: object) -> TriggeredRun:
        started.append(name)
        return TriggeredRun(name, "id-1", "brave-fox", "SCHEDULED", None, None, 0.0)

    monkeypatch.setattr("deployments.client.trigger", trigger)
    monkeypatch.setattr("tiefvision_web.prefect_status.prefect_configured", lambda: True)
    return started


def test_store_address_is_shown_to_the_token_holders_only(indexed_catalog, tmp_path) -> None:
    guarded = TestClient(
        create_app(indexed_catalog.settings(tmp_path / "g.sqlite", api_token=TOKEN))
    )
    assert "store" not in guarded.get("/api/status").json()
    wrong = {"Authorization": "Bearer " + "x" * len(TOKEN)}
    assert "store" not in guarded.get("/api/status", headers=wrong).json()
    holder = guarded.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert holder["store"] == indexed_catalog.store_url
    # Without a token nobody holds it: the address is shown to no one.
    no_token = TestClient(create_app(indexed_catalog.settings(tmp_path / "n.sqlite")))
    answer = no_token.get("/api/status")
    assert "store" not in answer.json()
    assert str(indexed_catalog.root) not in answer.text


def test_a_cross_origin_text_plain_post_does_not_start_a_flow(open_server, runs) -> None:
    """What a form or a no-cors ``fetch`` on another site sends: no preflight is needed."""
    body = '{"parameters": {"space": "supervised"}}'
    answer = open_server.post(
        "/api/flows/reindex/run",
        content=body,
        headers={"Origin": EVIL, "Content-Type": "text/plain"},
    )
    assert answer.status_code == 403 and "TIEFVISION_CORS_ORIGINS" in answer.json()["detail"]
    no_type = open_server.post("/api/flows/reindex/run", content=body, headers={"Origin": EVIL})
    assert no_type.status_code == 403
    assert runs == []


def test_write_bodies_must_be_declared_json(open_server, runs) -> None:
    body = '{"parameters": {}}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": content_type} if content_type else {}
        answer = open_server.post("/api/flows/reindex/run", content=body, headers=headers)
        assert answer.status_code == 415, (content_type, answer.text)
        assert "application/json" in answer.json()["detail"]
    boxes = open_server.put(
        "/api/boxes/anything",
        content='{"box": [0, 0, 1, 1]}',
        headers={"Content-Type": "text/plain"},
    )
    assert boxes.status_code == 415
    assert runs == []


@pytest.mark.parametrize(
    "headers",
    [
        {},  # curl, a script: no Origin
        {"Origin": "http://testserver"},  # this server's own pages
        {"Origin": "https://shop.example"},  # listed in TIEFVISION_CORS_ORIGINS
        {"Origin": "https://tiefvision.example", "X-Forwarded-Host": "tiefvision.example"},
    ],
    ids=["no-origin", "same-origin", "listed-origin", "behind-a-proxy"],
)
def test_json_writes_from_allowed_origins_still_work(open_server, runs, headers) -> None:
    answer = open_server.post("/api/flows/reindex/run", json={"parameters": {}}, headers=headers)
    assert answer.status_code == 202, answer.text
    empty = open_server.post("/api/flows/reindex/run", headers=headers)  # no body: no type needed
    assert empty.status_code == 202, empty.text
    assert runs == ["reindex", "reindex"]
