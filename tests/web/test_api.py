"""The HTTP API through FastAPI's test client, over a real indexed store and a real SQLite
annotations database: every endpoint, the error a user can cause at each (with its 4xx code
and a message saying what to do), the write-token rules, and an index switch under load."""

from __future__ import annotations

import io
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import S3_KEY, S3_SECRET
from tiefvision_core.annotations.repository import AnnotationDatabase
from tiefvision_core.catalog.ingest import ingest_catalog
from tiefvision_core.catalog.manifest import image_id_for, read_manifest
from tiefvision_core.config import load_settings
from tiefvision_core.index.spaces import rebuild_space
from tiefvision_core.storage.urls import open_store
from tiefvision_core.vector_index.versions import open_index
from tiefvision_web import create_app

DATA = Path(__file__).resolve().parents[1] / "data" / "images"
TOKEN = "test-token-0123456789abcdef"
SECRET = "do-not-leak-this-secret-7f3a"


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("web-api") / "annotations.sqlite"


@pytest.fixture(scope="module")
def client(indexed_catalog, database, lite0) -> TestClient:
    """Development mode, no token: writes are open (the default on loopback)."""
    settings = indexed_catalog.settings(database, aws_secret_access_key=SECRET)
    return TestClient(create_app(settings, encoder=lite0))


@pytest.fixture(scope="module")
def guarded(indexed_catalog, database, lite0) -> TestClient:
    """With an API token: writes need it."""
    settings = indexed_catalog.settings(database, api_token=TOKEN)
    return TestClient(create_app(settings, encoder=lite0))


@pytest.fixture(scope="module")
def ids(client: TestClient) -> list[str]:
    listing = client.get("/api/images", params={"per_page": 200}).json()
    return [image["image_id"] for image in listing["images"]]


def _annotations(database: Path) -> AnnotationDatabase:
    return AnnotationDatabase(f"sqlite:///{database}")


# -- health, docs, listing ------------------------------------------------------------------
def test_health_and_openapi_document_every_endpoint(client: TestClient) -> None:
    health = client.get("/api/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths) >= {
        "/api/search",
        "/api/images",
        "/api/images/{image_id}",
        "/api/images/{image_id}/crop",
        "/api/boxes/{image_id}",
        "/api/triplets",
        "/api/status",
        "/api/flows/{name}/run",
        "/api/health",
    }
    assert {"get", "post"} <= set(paths["/api/search"])
    assert {"get", "put"} <= set(paths["/api/boxes/{image_id}"])


def test_gallery_listing_pages_through_the_catalog(client: TestClient) -> None:
    first = client.get("/api/images", params={"page": 1, "per_page": 5}).json()
    assert first["total"] == 18 and first["pages"] == 4 and len(first["images"]) == 5
    assert {"image_id", "width", "height", "product_id"} <= set(first["images"][0])
    last = client.get("/api/images", params={"page": 4, "per_page": 5}).json()
    assert len(last["images"]) == 3
    everything = [
        image["image_id"]
        for page in range(1, 5)
        for image in client.get("/api/images", params={"page": page, "per_page": 5}).json()[
            "images"
        ]
    ]
    assert len(set(everything)) == 18 and everything == sorted(everything)
    assert client.get("/api/images", params={"page": 9}).json()["images"] == []
    assert client.get("/api/images", params={"page": 0}).status_code == 422
    assert client.get("/api/images", params={"per_page": 1000}).status_code == 422


# -- search ---------------------------------------------------------------------------------
def test_search_by_id_returns_scored_neighbours_with_boxes(client, ids, indexed_catalog) -> None:
    answer = client.get("/api/search", params={"id": ids[0], "k": 5})
    assert answer.status_code == 200, answer.text
    data = answer.json()
    live = open_store(indexed_catalog.store_url).read_pointer("indexes/unsupervised/CURRENT")
    assert data["index_version"] == live and data["space"] == "unsupervised"
    hits = data["results"]
    assert len(hits) == 5 and ids[0] not in {h["image_id"] for h in hits}
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1.0001 for s in scores)
    for hit in hits:
        left, top, right, bottom = hit["box"]
        assert 0 <= left < right <= hit["width"] and 0 <= top < bottom <= hit["height"]
    assert data["query_image_id"] == ids[0] and len(data["query_box"]) == 4


def test_search_by_id_filters_on_a_manifest_column(client, ids) -> None:
    listing = client.get("/api/images", params={"per_page": 200}).json()["images"]
    product = {i["image_id"]: i["product_id"] for i in listing}
    wanted = product[ids[0]]
    data = client.get(
        "/api/search", params={"id": ids[0], "k": 10, "filter": f"product_id={wanted}"}
    ).json()
    assert data["results"] and {product[h["image_id"]] for h in data["results"]} == {wanted}


@pytest.mark.parametrize(
    ("params", "code", "message"),
    [
        ({"id": "../../etc/passwd"}, 400, "is not an image id"),
        ({"id": "a..b"}, 400, "is not an image id"),
        ({"id": "no-such-image-00000000"}, 404, "GET /api/images lists them"),
        ({"k": 0}, 422, ""),
        ({"k": 101}, 422, ""),
        ({"space": "colour"}, 422, ""),
        ({"space": "supervised"}, 404, "rebuild-index --space supervised"),
        ({"filter": "no-equals-sign"}, 422, "COLUMN=VALUE"),
        ({"filter": "colour=red"}, 422, "cannot filter on 'colour'"),
    ],
)
def test_search_by_id_errors_say_what_to_do(client, ids, params, code, message) -> None:
    answer = client.get("/api/search", params={"id": ids[0], **params})
    assert answer.status_code == code, answer.text
    assert message in str(answer.json()["detail"])


def test_search_without_id_is_a_422(client) -> None:
    assert client.get("/api/search").status_code == 422


def test_search_by_upload_finds_the_same_photo_first(client, ids, indexed_catalog) -> None:
    photo = sorted(indexed_catalog.photos.rglob("*.jpg"))[4]
    answer = client.post(
        "/api/search",
        params={"k": 3},
        # The name and declared type are lies on purpose: the content decides.
        files={"image": ("notes.txt", photo.read_bytes(), "text/plain")},
    )
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert len(data["results"]) == 3 and data["results"][0]["score"] > 0.99
    rel_path = photo.relative_to(indexed_catalog.photos).as_posix()
    assert data["results"][0]["image_id"] == image_id_for(rel_path) and rel_path
    with Image.open(photo) as image:
        assert (data["query_width"], data["query_height"]) == image.size
    assert data["query_box"] == [0, 0, *Image.open(photo).size]  # no locator: whole photo


@pytest.mark.parametrize(
    ("name", "code", "message"),
    [
        ("text-named.jpg", 415, "not an image"),
        ("error-page.png", 415, "not an image"),
        ("random.bin", 415, "not an image"),
        ("empty.jpg", 400, "no bytes"),
        ("half.jpg", 422, "truncated"),
        ("bad-idat.png", 422, "corrupt"),
        ("bomb.png", 413, "decompression-bomb"),
    ],
)
def test_search_by_upload_refuses_bad_images(client, name, code, message) -> None:
    data = (DATA / "bad" / name).read_bytes()
    answer = client.post("/api/search", files={"image": ("photo.jpg", data, "image/jpeg")})
    assert answer.status_code == code, answer.text
    assert message in answer.json()["detail"]


def test_search_by_upload_needs_a_file(client) -> None:
    assert client.post("/api/search").status_code == 422


def test_uploads_over_the_cap_are_refused_before_they_are_read(
    indexed_catalog, tmp_path, lite0
) -> None:
    settings = indexed_catalog.settings(tmp_path / "db.sqlite", max_upload_bytes=4096)
    small = TestClient(create_app(settings, encoder=lite0))
    big = io.BytesIO()
    Image.effect_noise((256, 256), 64).convert("RGB").save(big, "PNG")
    payload = big.getvalue() * 3  # well over cap + envelope, whatever PNG compression did
    declared = small.post("/api/search", files={"image": ("a.png", payload, "image/png")})
    assert declared.status_code == 413 and "TIEFVISION_MAX_UPLOAD_BYTES" in declared.text

    def chunks():  # no Content-Length: counted while it arrives
        for start in range(0, len(payload), 8192):
            yield payload[start : start + 8192]

    streamed = small.post(
        "/api/search",
        content=chunks(),
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert streamed.status_code == 413, streamed.text
    # Between the photo cap and the envelope: the endpoint's own check.
    photo = io.BytesIO()
    Image.effect_noise((60, 60), 64).convert("RGB").save(photo, "PNG")
    assert 4096 < len(photo.getvalue()) < 64 * 1024
    own = small.post("/api/search", files={"image": ("b.png", photo.getvalue(), "image/png")})
    assert own.status_code == 413
    for refused in (declared, streamed, own):  # refused early or late: same headers
        assert refused.headers["x-frame-options"] == "DENY"


# -- images ---------------------------------------------------------------------------------
def test_images_originals_thumbnails_and_crops(client, ids, indexed_catalog) -> None:
    listing = client.get("/api/images", params={"per_page": 200}).json()["images"]
    image_id = ids[2]
    meta = next(i for i in listing if i["image_id"] == image_id)
    original = client.get(f"/api/images/{image_id}")
    assert original.status_code == 200 and original.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(original.content)) as image:
        assert image.size == (meta["width"], meta["height"])
    assert original.headers["etag"] and original.headers["x-content-type-options"] == "nosniff"
    on_disk = {p.read_bytes() for p in indexed_catalog.photos.rglob("*.jpg")}
    assert original.content in on_disk

    thumb = client.get(f"/api/images/{image_id}", params={"size": 64})
    with Image.open(io.BytesIO(thumb.content)) as image:
        assert max(image.size) <= 64 and image.format == "JPEG"
    crop = client.get(f"/api/images/{image_id}/crop")
    assert crop.status_code == 200
    left, top, right, bottom = map(int, crop.headers["x-box"].split(","))
    with Image.open(io.BytesIO(crop.content)) as image:
        assert image.size == (right - left, bottom - top)
    assert client.get(f"/api/images/{image_id}", params={"size": 4}).status_code == 422


def test_images_of_an_s3_catalog_are_streamed_without_exposing_the_bucket(
    s3_env, indexed_catalog, tmp_path
) -> None:
    """Photos and store in a real S3 server: the API streams the bytes itself, so the
    browser never sees the endpoint, the bucket, a key id or a presigned signature."""
    bucket = s3_env.new_bucket()
    source = open_store(f"s3://{bucket}/photos")
    originals = {}
    for path in sorted(indexed_catalog.photos.rglob("*.jpg"))[:4]:
        key = path.relative_to(indexed_catalog.photos).as_posix()
        source.put_bytes(key, path.read_bytes())
        originals[key] = path.read_bytes()
    store_url = f"s3://{bucket}/store"
    ingest_catalog(source, open_store(store_url))
    s3 = TestClient(
        create_app(
            load_settings(store_url=store_url, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
        )
    )

    images = s3.get("/api/images").json()["images"]
    assert len(images) == len(originals)
    endpoint = s3_env.endpoint.removeprefix("http://")
    for image in images:
        answer = s3.get(f"/api/images/{image['image_id']}", follow_redirects=False)
        assert answer.status_code == 200 and "location" not in answer.headers
        assert answer.content in originals.values()
        thumb = s3.get(f"/api/images/{image['image_id']}", params={"size": 32})
        with Image.open(io.BytesIO(thumb.content)) as picture:
            assert max(picture.size) <= 32
        exposed = " ".join(f"{k}: {v}" for k, v in answer.headers.items())
        for secret in (endpoint, S3_KEY, S3_SECRET, "X-Amz-Signature"):
            assert secret not in exposed
    status = s3.get("/api/status").text
    for secret in (endpoint, S3_KEY, S3_SECRET):
        assert secret not in status


@pytest.mark.parametrize(
    ("path", "codes"),
    [
        ("/api/images/..%2F..%2Fetc%2Fpasswd", {400, 404}),
        ("/api/images/%2Fetc%2Fpasswd", {400, 404}),
        ("/api/images/.hidden", {400}),
        ("/api/images/catalog%5Cmanifest", {400}),
        ("/api/images/no-such-image-00000000", {404}),
        ("/api/images/no-such-image-00000000/crop", {404}),
        ("/api/images/..%2Fstore/crop", {400, 404}),
    ],
)
def test_image_ids_cannot_reach_outside_the_catalog(client, path, codes) -> None:
    answer = client.get(path)
    assert answer.status_code in codes, (path, answer.status_code, answer.text[:200])


# -- annotations ----------------------------------------------------------------------------
def test_box_round_trip_is_stored_in_the_database(client, ids, database) -> None:
    image_id = ids[5]
    before = client.get(f"/api/boxes/{image_id}").json()
    assert before["box"] is None and before["located"] == [0, 0, before["width"], before["height"]]
    box = [3, 4, before["width"] - 5, before["height"] - 6]
    saved = client.put(f"/api/boxes/{image_id}", json={"box": box})
    assert saved.status_code == 200, saved.text
    assert saved.json()["box"] == box and saved.json()["source"] == "web"
    with _annotations(database) as annotations:
        assert list(annotations.get_box(image_id).box) == box
    assert client.get(f"/api/boxes/{image_id}").json()["box"] == box
    unannotated = client.get("/api/images", params={"annotated": "false", "per_page": 200})
    assert image_id not in {i["image_id"] for i in unannotated.json()["images"]}
    crop = client.get(f"/api/images/{image_id}/crop")
    assert crop.headers["x-box"] == ",".join(map(str, box))  # the annotated box wins


@pytest.mark.parametrize(
    ("box", "code", "message"),
    [
        ([10, 10, 5, 20], 422, "empty box"),
        ([0, 0, 100000, 10], 422, "outside the"),
        ([-1, 0, 10, 10], 422, "outside the"),
        ([1, 2, 3], 422, ""),
        (["a", 2, 3, 4], 422, ""),
    ],
)
def test_bad_boxes_are_refused(client, ids, box, code, message) -> None:
    answer = client.put(f"/api/boxes/{ids[6]}", json={"box": box})
    assert answer.status_code == code, answer.text
    assert message in str(answer.json()["detail"])


def test_box_of_unknown_or_malformed_image(client) -> None:
    assert client.get("/api/boxes/no-such-image-00000000").status_code == 404
    assert client.put("/api/boxes/a..b", json={"box": [0, 0, 5, 5]}).status_code == 400


def test_a_box_drawn_on_other_bytes_is_stale_until_saved_again(
    client, ids, database, indexed_catalog
) -> None:
    """A box drawn before the photo was replaced by other bytes: the editor's API says it
    is stale (the page has the notice for it), and saving it again confirms it for the
    photo's current bytes."""
    image_id = ids[11]
    manifest = read_manifest(open_store(indexed_catalog.store_url))
    current = {r["image_id"]: r["sha256"] for r in manifest.to_pylist()}[image_id]
    with _annotations(database) as annotations:
        annotations.set_box(image_id, (1, 2, 30, 40), sha256="0" * 64)
    stale = client.get(f"/api/boxes/{image_id}").json()
    assert stale["box"] == [1, 2, 30, 40] and stale["stale"] is True
    assert 'id="stale"' in client.get(f"/boxes/{image_id}").text
    saved = client.put(f"/api/boxes/{image_id}", json={"box": [1, 2, 30, 40]})
    assert saved.status_code == 200 and saved.json()["stale"] is False
    assert client.get(f"/api/boxes/{image_id}").json()["stale"] is False
    with _annotations(database) as annotations:
        assert annotations.get_box(image_id).sha256 == current


def test_triplets_are_stored_once(client, ids, database, indexed_catalog) -> None:
    triplet = {"reference": ids[0], "positive": ids[1], "negative": ids[9]}
    first = client.post("/api/triplets", json=triplet)
    assert first.status_code == 201 and first.json()["created"] is True
    again = client.post("/api/triplets", json=triplet)
    assert again.status_code == 200 and again.json()["created"] is False
    with _annotations(database) as annotations:
        stored = annotations.triplets()
    row = stored[(stored["reference"] == ids[0]) & (stored["negative"] == ids[9])]
    assert len(row) == 1 and row.iloc[0]["positive"] == ids[1] and row.iloc[0]["source"] == "web"
    manifest = read_manifest(open_store(indexed_catalog.store_url))
    shas = {r["image_id"]: r["sha256"] for r in manifest.to_pylist()}
    assert row.iloc[0]["reference_sha256"] == shas[ids[0]]  # made on the photos' bytes


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"negative": "REF"}, "three different images"),
        ({"positive": "no-such-image-00000000"}, "positive 'no-such-image-00000000'"),
        ({"negative": "../x"}, "negative '../x'"),
    ],
)
def test_bad_triplets_are_refused(client, ids, change, message) -> None:
    triplet = {"reference": ids[0], "positive": ids[1], "negative": ids[2]}
    triplet |= {k: (ids[0] if v == "REF" else v) for k, v in change.items()}
    answer = client.post("/api/triplets", json=triplet)
    assert answer.status_code == 422 and message in answer.json()["detail"], answer.text
    assert client.post("/api/triplets", json={"reference": ids[0]}).status_code == 422


# -- the write token ------------------------------------------------------------------------
def test_writes_need_the_token_when_one_is_set(guarded, ids, database) -> None:
    box = {"box": [0, 0, 10, 10]}
    triplet = {"reference": ids[3], "positive": ids[4], "negative": ids[10]}
    missing = guarded.put(f"/api/boxes/{ids[7]}", json=box)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in missing.json()["detail"]
    wrong = guarded.post("/api/triplets", json=triplet, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and "wrong" in wrong.json()["detail"]
    assert guarded.post("/api/flows/reindex/run").status_code == 401
    with _annotations(database) as annotations:
        assert annotations.get_box(ids[7]) is None
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert guarded.put(f"/api/boxes/{ids[7]}", json=box, headers=auth).status_code == 200
    assert guarded.post("/api/triplets", json=triplet, headers=auth).status_code == 201
    # Reads stay open.
    assert guarded.get(f"/api/boxes/{ids[7]}").json()["box"] == [0, 0, 10, 10]
    assert guarded.get("/api/status").json()["writes_need_token"] is True


def test_production_without_a_token_refuses_every_write(indexed_catalog, tmp_path, ids) -> None:
    settings = indexed_catalog.settings(tmp_path / "db.sqlite", production=True)
    production = TestClient(create_app(settings))
    for answer in (
        production.put(f"/api/boxes/{ids[0]}", json={"box": [0, 0, 5, 5]}),
        production.post(
            "/api/triplets", json={"reference": ids[0], "positive": ids[1], "negative": ids[2]}
        ),
        production.post("/api/flows/reindex/run"),
    ):
        assert answer.status_code == 403 and "TIEFVISION_API_TOKEN" in answer.json()["detail"]
    assert production.get("/api/search", params={"id": ids[0]}).status_code == 200


# -- status, flows, browser-facing headers --------------------------------------------------
def test_status_reports_versions_counts_and_no_secrets(client, indexed_catalog) -> None:
    status = client.get("/api/status")
    assert status.status_code == 200
    data = status.json()
    store = open_store(indexed_catalog.store_url)
    assert data["indexes"]["unsupervised"]["version"] == store.read_pointer(
        "indexes/unsupervised/CURRENT"
    )
    assert data["indexes"]["unsupervised"]["size"] == 18
    assert data["indexes"]["supervised"] is None
    assert data["catalog"]["ok"] == 18 and data["catalog"]["rejected"] == 0
    assert set(data["annotations"]) == {"boxes", "triplets"}
    assert data["models"]["locator"] is None and data["writes_need_token"] is False
    assert "configured" in data["prefect"]
    for path in ("/api/status", "/status", "/", "/openapi.json"):
        assert SECRET not in client.get(path).text


def test_flow_trigger_errors(client, monkeypatch) -> None:
    assert client.post("/api/flows/bad name!/run").status_code == 400
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    from prefect.settings import get_current_settings

    answer = client.post("/api/flows/reindex/run", json={"parameters": {"space": "supervised"}})
    if get_current_settings().api.url:  # a session-wide test server: nothing is deployed
        assert answer.status_code == 404 and "no deployment" in answer.json()["detail"]
    else:
        assert answer.status_code == 503 and "PREFECT_API_URL" in answer.json()["detail"]


@pytest.fixture
def triggered(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict, dict]]:
    """Runs the trigger route starts, through a stand-in of the shared Prefect client."""
    from deployments.client import TriggeredRun

    calls: list[tuple[str, dict, dict]] = []

    def trigger(name: str, parameters: dict, **options: object) -> TriggeredRun:
        calls.append((name, parameters, options))
        return TriggeredRun(name, "id-1", "brave-fox", "SCHEDULED", None, None, 0.0)

    monkeypatch.setattr("deployments.client.trigger", trigger)
    monkeypatch.setattr("tiefvision_web.prefect_status.prefect_configured", lambda: True)
    return calls


def test_flow_trigger_passes_the_body_as_typed_values(client, triggered) -> None:
    body = {"parameters": {"images": "s3://photos/catalog", "keep": 3, "scales": [320, 448]}}
    answer = client.post("/api/flows/reindex/nightly/run", json=body)
    assert answer.status_code == 202, answer.text
    assert answer.json()["flow_run_name"] == "brave-fox"
    # The values as the body typed them; text is read as JSON the way --param reads it.
    assert triggered == [("reindex/nightly", body["parameters"], {"text_as_json": True})]


@pytest.mark.parametrize(
    ("error", "status"),
    [("PrefectUnavailable", 503), ("DeploymentNotFound", 404), ("ConfigError", 422)],
)
def test_flow_trigger_errors_map_to_a_status_by_type(
    client, triggered, monkeypatch, error: str, status: int
) -> None:
    """By the error's type: the message's wording (here none of the usual) plays no part."""
    import deployments.client
    from tiefvision_core import errors

    kind = getattr(deployments.client, error, None) or getattr(errors, error)

    def refuse(name: str, parameters: dict, **options: object) -> None:
        raise kind("something went wrong")

    monkeypatch.setattr(deployments.client, "trigger", refuse)
    answer = client.post("/api/flows/reindex/run")
    assert answer.status_code == status and answer.json()["detail"] == "something went wrong"


def test_cors_is_off_and_pages_carry_security_headers(client, ids) -> None:
    origin = {"Origin": "https://evil.example"}
    answer = client.get("/api/search", params={"id": ids[0]}, headers=origin)
    assert "access-control-allow-origin" not in answer.headers
    preflight = client.options(
        "/api/triplets",
        headers={**origin, "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    page = client.get("/")
    assert page.headers["x-frame-options"] == "DENY"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    # Error answers carry them too (4xx from the app and the exception handlers alike).
    for answer in (
        client.get("/api/images/no-such-image-00000000"),
        client.get("/api/search", params={"id": "../x"}),
    ):
        assert answer.status_code in (400, 404)
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "same-origin"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    # Swagger UI loads assets a strict policy would block: no CSP there, the rest still set.
    docs = client.get("/docs")
    assert "content-security-policy" not in docs.headers
    assert docs.headers["x-frame-options"] == "DENY"


def test_cors_can_be_enabled_for_named_origins(indexed_catalog, tmp_path, ids) -> None:
    settings = indexed_catalog.settings(tmp_path / "db.sqlite", cors_origins="https://shop.example")
    allowed = TestClient(create_app(settings))
    answer = allowed.get("/api/health", headers={"Origin": "https://shop.example"}).headers.get(
        "access-control-allow-origin"
    )
    assert answer == "https://shop.example"
    other = allowed.get("/api/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


# -- hot reload -----------------------------------------------------------------------------
def test_index_switch_under_concurrent_requests_drops_nothing(
    indexed_catalog, tmp_path, ids, lite0
) -> None:
    """Clients search without pause while a rebuild publishes a new version: every request
    succeeds, answers switch to the new version within the reload interval, and no request
    ever sees a version other than the old or the new one."""
    settings = indexed_catalog.settings(tmp_path / "db.sqlite")
    app = create_app(settings, reload_interval=0.2)
    store = open_store(indexed_catalog.store_url)
    old = store.read_pointer("indexes/unsupervised/CURRENT")
    seen: Counter[tuple[int, str]] = Counter()
    failures: list[str] = []
    stop = threading.Event()

    def hammer(n: int) -> None:
        client = TestClient(app)
        while not stop.is_set():
            try:
                answer = client.get("/api/search", params={"id": ids[n], "k": 3})
            except Exception as error:  # a dropped request, not an HTTP error
                failures.append(repr(error))
                continue
            if answer.status_code != 200:
                failures.append(f"{answer.status_code} {answer.text[:200]}")
            else:
                seen[(n, answer.json()["index_version"])] += 1

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    new = rebuild_space(store, lite0, "unsupervised").version
    assert new != old
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(seen[(n, new)] >= 3 for n in range(4)):
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert not failures, failures[:5]
    versions = {version for _, version in seen}
    assert versions == {old, new}, versions
    assert all(seen[(n, new)] >= 3 for n in range(4)), seen
    assert app.state.web.indexes["unsupervised"].reloads == 1
    # The same answers as a fresh reader of the new version.
    fresh = open_index(store, "unsupervised")
    assert fresh.version == new


def test_web_settings_are_validated_without_echoing_the_token(monkeypatch) -> None:
    from tiefvision_core.config import load_settings
    from tiefvision_core.errors import ConfigError

    monkeypatch.setenv("TIEFVISION_API_TOKEN", "short-secret")
    with pytest.raises(ConfigError, match="TIEFVISION_API_TOKEN") as caught:
        load_settings()
    assert "short-secret" not in str(caught.value)
    monkeypatch.setenv("TIEFVISION_API_TOKEN", "")
    assert load_settings().api_token is None
    monkeypatch.setenv("TIEFVISION_API_TOKEN", f"  {TOKEN} ")
    assert load_settings().api_token.get_secret_value() == TOKEN
    monkeypatch.setenv("TIEFVISION_MAX_UPLOAD_BYTES", "10")
    with pytest.raises(ConfigError, match="MAX_UPLOAD_BYTES"):
        load_settings()
