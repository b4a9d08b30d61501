"""The catalog: photos listed from a source, safely decoded, ingested (``ingest``) into
versioned manifests (``manifest``); synthetic catalogs for demos and tests.

Import from the module that defines a name: the package re-exports nothing, so importing
one module never loads another's heavy dependencies (a search by id never imports torch).
"""
