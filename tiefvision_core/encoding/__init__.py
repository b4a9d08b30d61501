"""Pixels → per-position feature maps: one image's inputs and encoding (``pixels``), the
requests a stream is made of (``requests``), the runtime that streams them (``runtime``:
device, layout, process pool), shards on storage, whole-catalog encoding
(``encode``).

Import from the module that defines a name: the package re-exports nothing, so importing
one module never loads another's heavy dependencies (a search by id never imports torch).
"""
