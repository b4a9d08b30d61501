"""The vector index at storage level: FAISS index kinds and vectors (``kinds``, ``vectors``),
versions on storage — named, listed, switched and opened (``versions``), published
(``publish``) — and the ``CURRENT`` pointer that refuses a regression (``pointer``).

Below evaluation, similarity and the index stage (``tiefvision_core.index``: gate, spaces,
updates, search), which build on it; it imports none of them. Import the modules
themselves: this package re-exports nothing."""
