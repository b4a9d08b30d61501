"""The web pages: gallery, search by upload, box editor, triplet editor, status.

Why server-rendered templates with a little JavaScript: each page is one form of the API
(the scripts call ``/api/...`` like any client), there is no front-end build chain to keep
alive, and navigation (pages of the gallery, next unannotated image) is plain links.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from tiefvision_core.errors import InputError
from tiefvision_core.vector_index.versions import SPACES
from tiefvision_web.api import catalog_image, status_report, web
from tiefvision_web.auth import writes_need_token
from tiefvision_web.catalog_view import CatalogView
from tiefvision_web.errors import shown

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")

PER_PAGE = 24


def _page(request: Request, name: str, **context: Any) -> HTMLResponse:
    context |= {"writes_need_token": writes_need_token(request), "spaces": SPACES}
    return templates.TemplateResponse(request, name, context)


def _catalog(request: Request) -> CatalogView | None:
    try:
        return web(request).catalog.get()
    except InputError:
        return None


def _empty(request: Request, title: str) -> HTMLResponse:
    return _page(
        request,
        "empty.html",
        title=title,
        message="Nothing was ingested yet: run `tiefvision ingest --images DIR` (or `make demo`).",
    )


@router.get("/", response_class=HTMLResponse)
def gallery(
    request: Request,
    page: Annotated[int, Query(ge=1)] = 1,
    space: str = "unsupervised",
) -> HTMLResponse:
    catalog = _catalog(request)
    if catalog is None:
        return _empty(request, "Gallery")
    if space not in SPACES:
        space = "unsupervised"
    pages = max(1, -(-len(catalog) // PER_PAGE))
    page = min(page, pages)
    return _page(
        request,
        "gallery.html",
        title="Gallery",
        images=catalog.page(page, PER_PAGE),
        page=page,
        pages=pages,
        total=len(catalog),
        space=space,
    )


@router.get("/search", response_class=HTMLResponse)
def upload_page(request: Request) -> HTMLResponse:
    return _page(request, "upload.html", title="Search by photo")


def _unannotated_neighbours(
    request: Request, catalog: CatalogView, image_id: str
) -> tuple[str | None, str | None, int]:
    boxed = set(web(request).annotations.boxes()["image_id"])
    ids = catalog.ids
    position = ids.index(image_id)
    before = next((i for i in reversed(ids[:position]) if i not in boxed), None)
    after = next((i for i in ids[position + 1 :] if i not in boxed), None)
    return before, after, sum(1 for i in ids if i not in boxed)


@router.get("/boxes", response_class=HTMLResponse, response_model=None)
def boxes_start(request: Request) -> RedirectResponse | HTMLResponse:
    catalog = _catalog(request)
    if catalog is None or not len(catalog):
        return _empty(request, "Box editor")
    boxed = set(web(request).annotations.boxes()["image_id"])
    first = next((i for i in catalog.ids if i not in boxed), catalog.ids[0])
    return RedirectResponse(request.url_for("box_editor", image_id=first), status_code=303)


@router.get("/boxes/{image_id}", response_class=HTMLResponse, name="box_editor")
def box_editor(request: Request, image_id: str) -> HTMLResponse:
    state = web(request)
    image = catalog_image(state, image_id)
    catalog = state.catalog.get()
    previous, following, left = _unannotated_neighbours(request, catalog, image.image_id)
    return _page(
        request,
        "boxes.html",
        title="Box editor",
        image=image,
        previous=previous,
        following=following,
        unannotated=left,
    )


@router.get("/triplets", response_class=HTMLResponse, response_model=None)
def triplets_start(request: Request) -> RedirectResponse | HTMLResponse:
    catalog = _catalog(request)
    if catalog is None or not len(catalog):
        return _empty(request, "Triplet editor")
    return RedirectResponse(
        request.url_for("triplet_editor", image_id=catalog.ids[0]), status_code=303
    )


@router.get("/triplets/{image_id}", response_class=HTMLResponse, name="triplet_editor")
def triplet_editor(request: Request, image_id: str, space: str = "unsupervised") -> HTMLResponse:
    state = web(request)
    image = catalog_image(state, image_id)
    ids = state.catalog.get().ids
    position = ids.index(image.image_id)
    if space not in SPACES:
        raise HTTPException(404, f"unknown space {shown(space)}: use one of {', '.join(SPACES)}")
    return _page(
        request,
        "triplets.html",
        title="Triplet editor",
        image=image,
        space=space,
        previous=ids[position - 1] if position > 0 else None,
        following=ids[position + 1] if position + 1 < len(ids) else None,
    )


@router.get("/status", response_class=HTMLResponse)
def status_page(request: Request) -> HTMLResponse:
    return _page(request, "status.html", title="Status", report=status_report(web(request)))
