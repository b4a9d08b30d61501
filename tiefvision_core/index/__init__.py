"""The index stage: a space's vectors built and published behind the regression gate,
incremental updates, search by id and by photo (in separate modules: a search by id never
imports torch), reports. The index files, their versions and the ``CURRENT`` pointer are
one level down, in :mod:`tiefvision_core.vector_index`.

Import from the module that defines a name: the package re-exports nothing, so importing
one module never loads another's heavy dependencies (a search by id never imports torch).
"""
