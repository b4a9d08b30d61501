"""Each stage's parameters, declared once: a typed pydantic model per stage.

The model is the stage's one declaration of what it takes (type, default, bounds, help).
The flow's signature, its Prefect parameter form (the deployment's form in the UI) and the
CLI command's options are all derived from it (:mod:`flows._stage`,
:mod:`tiefvision_cli.parameters`), so a parameter is added, renamed or bounded in one place.
Parameters shared by several stages (the store, the encoder, the store lock, the regression
gate …) live in :mod:`.groups`; :mod:`.stages` composes them per stage.

Pure configuration: no Prefect, no torch, no pyarrow (the CLI imports these models to
build its ``--help``).
"""
