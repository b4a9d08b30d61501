"""TiefVision's web service: the search API and the pages (gallery, search by upload, box
and triplet editors, status). ``create_app(settings)`` builds it; ``tiefvision serve``
runs it with uvicorn."""

from tiefvision_web.app import create_app

__all__ = ["create_app"]
