"""Evaluation: how good what is live is, on the user's own catalog.

How one index version's retrieval is scored, and the paired difference of two versions
(``spaces``: what the ``evaluate`` stage and the index's regression gate both use); the
``evaluate`` stage itself — the live locator and every live space, and their history
(``evaluate``). Above the locator, similarity and the storage-level index
(``tiefvision_core.vector_index``); below the index stage. Import the modules themselves:
this package re-exports nothing."""
