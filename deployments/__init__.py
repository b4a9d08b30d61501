"""Prefect deployments of TiefVision: ``prefect.yaml`` and the Python that goes with it.

Why a package next to the file: the CLI and the web service both talk to the configured
Prefect server, through one client (:mod:`deployments.client`) instead of one importing the
other; work-pool setup (:mod:`deployments.setup`) and ``prefect.yaml``'s deploy-time build
step (:mod:`deployments.steps`) live here too. Importing the package loads no Prefect.
"""
