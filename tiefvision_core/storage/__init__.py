"""Where everything lives: the store interface and local stores (``stores``), S3 (``s3``),
what a URL names, opened and read with caps and checks (``urls``), the store lock (``lock``).

Import from the module that defines a name: the package re-exports nothing, so importing
one module never loads another's heavy dependencies (a search by id never imports torch).
"""
