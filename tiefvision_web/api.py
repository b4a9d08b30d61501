"""The HTTP API under ``/api``: search, images, annotations, status, flow triggers.

Why sync endpoints: searches (FAISS, the encoder) and storage reads block; FastAPI runs
``def`` endpoints in its thread pool, so slow ones never stall the event loop. The search by
upload is the exception: it waits for a place of its own (:mod:`tiefvision_web.admission`)
without holding a thread, then works in one. Every error a
user can cause becomes a 4xx with a ``detail`` that says what to do; a 5xx is a bug or an
unreachable dependency (storage, database, Prefect).
"""

from __future__ import annotations

import functools
import math
import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, HTTPException, Query, Request, Response, UploadFile
from fastapi import status as http
from pydantic import BaseModel, Field, field_validator

from tiefvision_core.annotations import files
from tiefvision_core.errors import ConfigError, InputError, TiefVisionError
from tiefvision_core.index.search import SearchResult, query_row, search_by_id, search_by_photo
from tiefvision_core.storage.layout import LOCATOR_CURRENT, SIMILARITY_CURRENT
from tiefvision_core.vector_index.versions import SPACES, OpenedIndex
from tiefvision_web.auth import holds_token, require_writer, writes_need_token
from tiefvision_web.catalog_view import CatalogImage, CatalogView, valid_image_id
from tiefvision_web.errors import shown
from tiefvision_web.images import MEDIA_TYPES, crop_jpeg, original_bytes, thumbnail_jpeg
from tiefvision_web.state import WebState
from tiefvision_web.uploads import check_size, read_upload

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["api"])

Space = Literal["unsupervised", "supervised"]
_FLOW_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}(/[A-Za-z0-9_.-]{1,100})?$")


# -- models (the OpenAPI schema at /docs) ---------------------------------------------------
class Hit(BaseModel):
    image_id: str
    score: float
    box: list[int] = Field(description="left, top, right, bottom in pixels of the photo")
    width: int | None = None
    height: int | None = None


class SearchAnswer(BaseModel):
    space: str
    index_version: str
    query_box: list[int] | None = Field(
        None, description="the box searched with: the query photo's located product"
    )
    query_image_id: str | None = None
    query_width: int | None = None
    query_height: int | None = None
    results: list[Hit]


class ImageItem(BaseModel):
    image_id: str
    width: int
    height: int
    product_id: str | None = None
    category: str | None = None


class ImagePage(BaseModel):
    page: int
    per_page: int
    total: int
    pages: int
    manifest_version: str
    images: list[ImageItem]


class BoxBody(BaseModel):
    box: list[int] = Field(min_length=4, max_length=4, description="left, top, right, bottom")


class BoxAnswer(BaseModel):
    image_id: str
    width: int
    height: int
    box: list[int] | None = Field(None, description="the annotated box, if any")
    source: str | None = None
    updated_at: str | None = None
    located: list[int] | None = Field(None, description="the box the unsupervised index uses")
    stale: bool = Field(
        False,
        description="the box was drawn on other bytes than the photo has now: left out of "
        "training until a PUT confirms it",
    )


class TripletBody(BaseModel):
    reference: str = Field(description="H")
    positive: str = Field(description="H+: more similar to H than H−")
    negative: str = Field(description="H−")


class TripletAnswer(BaseModel):
    reference: str
    positive: str
    negative: str
    created: bool = Field(description="false when the triplet was stored already")


def _finite(value: Any) -> None:
    """Refuse NaN and ±Infinity anywhere in ``value``: Python's JSON parser accepts them (and
    turns 1e400 into Infinity), but they are not JSON, and a flow parameter must be JSON.
    A loop, not recursion: a body may nest as deep as the parser allows."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"a parameter is {item}: NaN and Infinity are not JSON numbers")
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


class FlowRunBody(BaseModel):
    parameters: dict[str, Any] = Field(default_factory=dict)

    @field_validator("parameters")
    @classmethod
    def _only_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        _finite(value)
        return value


# -- helpers --------------------------------------------------------------------------------
def web(request: Request) -> WebState:
    return request.app.state.web


State = Annotated[WebState, Depends(web)]


def _not_found(error: InputError) -> HTTPException:
    return HTTPException(http.HTTP_404_NOT_FOUND, str(error))


def catalog_of(state: WebState) -> CatalogView:
    try:
        return state.catalog.get()
    except InputError as error:
        raise _not_found(error) from None


def index_of(state: WebState, space: str) -> OpenedIndex:
    try:
        return state.indexes[space].get()
    except InputError as error:
        raise _not_found(error) from None


def catalog_image(state: WebState, image_id: str) -> CatalogImage:
    """The catalog image ``image_id`` names; 400 for a malformed id, 404 for an unknown one."""
    if not valid_image_id(image_id):
        raise HTTPException(
            http.HTTP_400_BAD_REQUEST,
            f"{image_id[:80]!r} is not an image id: ids are letters, digits, '.', '_' and "
            "'-' (see GET /api/images)",
        )
    image = catalog_of(state).get(image_id)
    if image is None:
        raise HTTPException(
            http.HTTP_404_NOT_FOUND,
            f"no usable catalog image {shown(image_id)}: check the id (GET /api/images lists them)",
        )
    return image


def _answer(state: WebState, result: SearchResult, **query: Any) -> dict[str, Any]:
    catalog = catalog_of(state)
    data = result.as_dict()
    for hit in data["results"]:
        image = catalog.get(hit["image_id"])
        if image is not None:
            hit["width"], hit["height"] = image.width, image.height
    return {**data, **query}


def _filters(items: list[str] | None) -> dict[str, str]:
    filters = {}
    for item in items or []:
        column, sep, value = item.partition("=")
        if not sep or not column:
            raise HTTPException(
                http.HTTP_422_UNPROCESSABLE_CONTENT,
                f"filter {shown(item)}: write COLUMN=VALUE, e.g. category=dress",
            )
        filters[column] = value
    return filters


def _located_box(state: WebState, image_id: str) -> list[int] | None:
    try:
        opened = state.indexes["unsupervised"].get()
        return [int(v) for v in opened.ids.iloc[opened.row_of(image_id)]["box"]]
    except InputError:
        return None


_K = Annotated[int, Query(ge=1, le=100, description="how many results")]
_SPACE = Annotated[Space, Query(description="unsupervised or supervised")]
_FILTER = Annotated[
    list[str] | None, Query(description="COLUMN=VALUE, e.g. category=dress (repeatable)")
]


# -- search ---------------------------------------------------------------------------------
@router.get("/search", response_model=SearchAnswer, summary="Most similar to a catalog image")
def search_id(
    state: State,
    id: Annotated[str, Query(description="a catalog image id")],
    k: _K = 10,
    space: _SPACE = "unsupervised",
    filter: _FILTER = None,
) -> dict[str, Any]:
    image = catalog_image(state, id)
    where = _filters(filter)
    opened = index_of(state, space)
    live = catalog_of(state).live
    try:
        query_row(opened, image.image_id, live)  # not indexed, or re-shot since: a 404
    except InputError as error:
        raise _not_found(error) from None
    result = search_by_id(opened, image.image_id, k=k, where=where, live=live)
    return _answer(
        state,
        result,
        query_image_id=image.image_id,
        query_width=image.width,
        query_height=image.height,
    )


@router.post("/search", response_model=SearchAnswer, summary="Most similar to an uploaded photo")
async def search_upload(
    state: State,
    image: Annotated[UploadFile, File(description="a photo (JPEG, PNG, WebP, …)")],
    k: _K = 10,
    space: _SPACE = "unsupervised",
    filter: _FILTER = None,
) -> dict[str, Any]:
    """Runs in a worker thread of its own admission (:mod:`tiefvision_web.admission`): at
    most ``TIEFVISION_WORKERS`` at work, a few waiting, 503 with ``Retry-After`` beyond."""
    work = functools.partial(_search_upload, state, image, k, space, filter)
    return await state.admission.run(work)


def _search_upload(
    state: WebState, image: UploadFile, k: int, space: str, filter: list[str] | None
) -> dict[str, Any]:
    settings = state.settings
    data = image.file.read(settings.max_upload_bytes + 1)
    check_size(data, settings.max_upload_bytes)
    where = _filters(filter)
    opened = index_of(state, space)
    live = catalog_of(state).live
    photo = read_upload(state.store, state.encoder, data, max_pixels=settings.max_image_pixels)
    del data  # the upload's bytes are not needed once decoded: freed before encoding
    result = search_by_photo(state.store, opened, state.encoder, photo, k=k, where=where, live=live)
    return _answer(state, result, query_width=photo.info.width, query_height=photo.info.height)


# -- images ---------------------------------------------------------------------------------
_CACHE = {"Cache-Control": "private, max-age=3600"}


@router.get("/images", response_model=ImagePage, summary="Catalog images, page by page")
def list_images(
    state: State,
    page: Annotated[int, Query(ge=1)] = 1,
    per_page: Annotated[int, Query(ge=1, le=200)] = 24,
    annotated: Annotated[
        bool | None, Query(description="only images with (true) or without (false) a box")
    ] = None,
) -> dict[str, Any]:
    catalog = catalog_of(state)
    ids = catalog.ids
    if annotated is not None:
        boxed = set(state.annotations.boxes()["image_id"])
        ids = [i for i in ids if (i in boxed) == annotated]
    pages = max(1, -(-len(ids) // per_page))
    return {
        "page": page,
        "per_page": per_page,
        "total": len(ids),
        "pages": pages,
        "manifest_version": catalog.version,
        "images": [image.as_dict() for image in catalog.page(page, per_page, ids)],
    }


@router.get(
    "/images/{image_id}",
    response_class=Response,
    responses={200: {"content": {"image/*": {}}}},
    summary="The photo (or a thumbnail with ?size=)",
)
def get_image(
    state: State,
    image_id: str,
    size: Annotated[int | None, Query(ge=16, le=1024, description="longer side")] = None,
) -> Response:
    image = catalog_image(state, image_id)
    headers = {**_CACHE, "ETag": f'"{image.sha256}"'}
    if size is not None:
        return Response(
            thumbnail_jpeg(state, image, size), media_type="image/jpeg", headers=headers
        )
    media = MEDIA_TYPES.get(image.format, "application/octet-stream")
    return Response(original_bytes(state, image), media_type=media, headers=headers)


@router.get(
    "/images/{image_id}/crop",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
    summary="The product box of the photo",
)
def get_crop(
    state: State,
    image_id: str,
    size: Annotated[int | None, Query(ge=16, le=1024, description="longer side")] = None,
) -> Response:
    """The annotated box when there is one, else the box the index uses, else the photo."""
    image = catalog_image(state, image_id)
    record = state.annotations.get_box(image.image_id)
    box = list(record.box) if record else _located_box(state, image.image_id)
    box = box or [0, 0, image.width, image.height]
    return Response(
        crop_jpeg(state, image, box, size),
        media_type="image/jpeg",
        headers={**_CACHE, "X-Box": ",".join(map(str, box))},
    )


# -- annotations ----------------------------------------------------------------------------
@router.get("/boxes/{image_id}", response_model=BoxAnswer, summary="The product box of a photo")
def get_box(state: State, image_id: str) -> dict[str, Any]:
    image = catalog_image(state, image_id)
    record = state.annotations.get_box(image.image_id)
    return {
        "image_id": image.image_id,
        "width": image.width,
        "height": image.height,
        "box": list(record.box) if record else None,
        "source": record.source if record else None,
        "updated_at": record.updated_at.isoformat() if record else None,
        "located": _located_box(state, image.image_id),
        "stale": bool(record and record.stale(image.sha256)),
    }


@router.put(
    "/boxes/{image_id}",
    response_model=BoxAnswer,
    dependencies=[Depends(require_writer)],
    summary="Store the product box of a photo (needs the API token when one is set)",
)
def put_box(state: State, image_id: str, body: BoxBody) -> dict[str, Any]:
    image = catalog_image(state, image_id)
    box = files.Box(*body.box)
    shape = files.CatalogImage(
        image.image_id, image.rel_path, image.sha256, image.width, image.height
    )
    problem = files.box_problem(box, shape)
    if problem:
        raise HTTPException(http.HTTP_422_UNPROCESSABLE_CONTENT, f"image {image_id!r}: {problem}")
    state.annotations.set_box(image.image_id, list(box), source="web", sha256=image.sha256)
    return get_box(state, image.image_id)


@router.post(
    "/triplets",
    response_model=TripletAnswer,
    status_code=http.HTTP_201_CREATED,
    dependencies=[Depends(require_writer)],
    summary="Store a triplet H, H+, H− (needs the API token when one is set)",
)
def post_triplet(state: State, body: TripletBody, response: Response) -> dict[str, Any]:
    names = (body.reference, body.positive, body.negative)
    catalog = catalog_of(state)
    shas = []
    for role, name in zip(("reference", "positive", "negative"), names, strict=True):
        image = catalog.get(name) if valid_image_id(name) else None
        if image is None:
            raise HTTPException(
                http.HTTP_422_UNPROCESSABLE_CONTENT,
                f"{role} {name[:80]!r} is not a usable catalog image id",
            )
        shas.append(image.sha256)
    try:
        created = state.annotations.add_triplet(
            *names, source="web", sha256s=(shas[0], shas[1], shas[2])
        )
    except InputError as error:
        raise HTTPException(http.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from None
    if not created:
        response.status_code = http.HTTP_200_OK
    return {
        "reference": body.reference,
        "positive": body.positive,
        "negative": body.negative,
        "created": created,
    }


# -- status and flows -----------------------------------------------------------------------
def status_report(state: WebState, *, with_prefect: bool = True) -> dict[str, Any]:
    """Versions, counts and (when a Prefect server is configured) deployments and runs."""
    indexes: dict[str, Any] = {}
    for space in SPACES:
        try:
            opened = state.indexes[space].get()
        except InputError:
            indexes[space] = None
            continue
        indexes[space] = {
            "version": opened.version,
            "kind": opened.metadata.get("kind"),
            "size": len(opened.ids),
            "created_at": opened.metadata.get("created_at"),
            "source": opened.metadata.get("source"),
        }
    try:
        catalog = state.catalog.get()
        catalog_info: dict[str, Any] | None = {
            "manifest_version": catalog.version,
            **catalog.counts,
        }
    except InputError:
        catalog_info = None
    try:
        annotations: dict[str, Any] = state.annotations.counts()
    except TiefVisionError as error:
        annotations = {"error": str(error)}
    report = {
        "store": state.store.uri(),
        "catalog": catalog_info,
        "indexes": indexes,
        "models": {
            "locator": state.store.read_pointer(LOCATOR_CURRENT),
            "similarity": state.store.read_pointer(SIMILARITY_CURRENT),
            "encoder": state.settings.encoder,
        },
        "annotations": annotations,
        "writes_need_token": state.settings.api_token is not None or state.settings.production,
    }
    if with_prefect:
        from tiefvision_web.prefect_status import prefect_status

        report["prefect"] = prefect_status()
    return report


@router.get("/status", summary="Index and model versions, counts, recent flow runs")
def get_status(state: State, request: Request) -> dict[str, Any]:
    """``store`` (where the data lives: a path, a bucket) only for the API token's holders;
    it tells anyone else where to aim."""
    report = status_report(state) | {"writes_need_token": writes_need_token(request)}
    if not holds_token(request):
        del report["store"]
    return report


@router.post(
    "/flows/{name:path}/run",
    status_code=http.HTTP_202_ACCEPTED,
    dependencies=[Depends(require_writer)],
    summary="Start a run of a deployment (needs the API token when one is set)",
)
def run_flow(name: str, body: FlowRunBody | None = None) -> dict[str, Any]:
    from tiefvision_web.prefect_status import prefect_configured

    if not _FLOW_NAME.match(name):
        raise HTTPException(
            http.HTTP_400_BAD_REQUEST,
            f"{name[:80]!r} is not a deployment name: use FLOW or FLOW/DEPLOYMENT",
        )
    if not prefect_configured():
        raise HTTPException(
            http.HTTP_503_SERVICE_UNAVAILABLE,
            "no Prefect server is configured: set PREFECT_API_URL for the web service",
        )
    from deployments.client import DeploymentNotFound, PrefectUnavailable, trigger

    try:
        # Body values as the CLI's --param takes them: "3" is 3 unless the parameter is text.
        run = trigger(name, body.parameters if body else {}, text_as_json=True)
    except DeploymentNotFound as error:
        raise _not_found(error) from None
    except PrefectUnavailable as error:
        raise HTTPException(http.HTTP_503_SERVICE_UNAVAILABLE, str(error)) from None
    except ConfigError as error:
        raise HTTPException(http.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from None
    return run.as_dict()


@router.get("/health", summary="Liveness: the process answers; whether the storage does")
def health(state: State) -> dict[str, Any]:
    """Always 200 while the process answers (an orchestrator restarting the service would
    not bring the storage back); ``status`` is ``degraded`` and ``storage`` ``unreachable``
    while the storage does not answer, which a readiness check or a person can read."""
    reachable = state.storage_reachable()
    return {
        "status": "ok" if reachable else "degraded",
        "storage": "ok" if reachable else "unreachable",
        "indexes": {space: state.indexes[space].version for space in SPACES},
    }
