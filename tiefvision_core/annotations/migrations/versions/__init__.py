"""Revisions, one file each, named ``NNNN_what.py``; Alembic skips this ``__init__``."""
