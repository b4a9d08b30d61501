"""How alike two crops are: unsupervised mean cosine (``unsupervised``), Deep Ranking on
triplets (``deep_ranking``, its triplets in ``triplets``, augmented views in ``views``), its
training runs (``training``), retrieval metrics (``retrieval``).

Import from the module that defines a name: the package re-exports nothing, so importing
one module never loads another's heavy dependencies (a search by id never imports torch).
"""
