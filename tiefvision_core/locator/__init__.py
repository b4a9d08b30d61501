"""Where the product is in a photo (OverFeat style): the heads and box inference, training
windows (crops), training, runs, models and boxes on storage, box scoring.

Import from the module that defines a name: the package re-exports nothing, so importing
one module never loads another's heavy dependencies (a search by id never imports torch).
"""
