"""Deployment names and run parameters as a user types them: pure logic, no Prefect.

Why here: ``tiefvision trigger reindex --param keep=3`` has to turn shell words into the
typed parameters a deployment's schema expects, and pick one deployment from a short name;
both are plain data transformations, testable without a server. The Prefect client side is
in :mod:`deployments.client`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tiefvision_core.errors import ConfigError, InputError

__all__ = [
    "check_parameters",
    "cpu_pool_template",
    "gpu_pool_template",
    "parse_parameters",
    "pick_deployment",
    "split_parameters",
    "typed_parameters",
    "values_from_environment",
]


def _accepts_only_strings(schema: Mapping[str, Any]) -> bool:
    """True when a property's schema takes strings (and maybe null) and nothing else."""
    options = schema.get("anyOf") or [schema]
    types = {option.get("type") for option in options}
    if "enum" in schema:
        types.add("string" if all(isinstance(v, str) for v in schema["enum"]) else "mixed")
    return "string" in types and types <= {"string", "null"}


def split_parameters(items: Iterable[str]) -> dict[str, str]:
    """``NAME=VALUE`` words → each parameter's text as typed; refuses a word without a
    name or ``=``, and a name given twice."""
    parameters: dict[str, str] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(
                f"--param {item!r}: write NAME=VALUE, e.g. --param images=s3://photos/catalog"
            )
        if name in parameters:
            raise ConfigError(f"--param {name} given twice: give each parameter once")
        parameters[name] = raw
    return parameters


def typed_parameters(
    values: Mapping[str, Any], schema: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Values as a person gives them → the types the schema expects. Text is read as JSON
    when it parses (``"3"``, ``"true"``, ``"[320, 448]"``), else kept as text; other values
    are kept as they are.

    Where the schema says a parameter is text, the value is text even when it looks like
    JSON: ``encoder=123`` (or ``{"encoder": 123}`` from a JSON body) means the encoder named
    "123", not the number. Why one rule for words and JSON bodies: the web API has always
    accepted exactly what ``--param`` accepts.
    """
    properties = (schema or {}).get("properties", {})
    typed: dict[str, Any] = {}
    for name, given in values.items():
        text_only = _accepts_only_strings(properties.get(name, {}))
        if isinstance(given, str):
            try:
                value = json.loads(given)
            except ValueError:
                value = given
            if not isinstance(value, str) and value is not None and text_only:
                value = given
        elif given is not None and text_only:
            value = json.dumps(given)
        else:
            value = given
        typed[name] = value
    return typed


def parse_parameters(
    items: Iterable[str], schema: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``NAME=VALUE`` words → parameters (:func:`split_parameters`, then
    :func:`typed_parameters`): ``3``, ``true``, ``null``, ``[320, 448]`` are JSON,
    ``s3://photos/catalog`` is text, and a text parameter stays text."""
    return typed_parameters(split_parameters(items), schema)


def check_parameters(
    parameters: Mapping[str, Any], schema: Mapping[str, Any], deployment: str
) -> None:
    """Refuse names the deployment does not take and required ones that are missing (the
    schema check of the values themselves is Prefect's, see :mod:`deployments.client`)."""
    known = list(schema.get("properties", {}))
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise ConfigError(
            f"{deployment} takes no parameter {', '.join(unknown)}: "
            f"it takes {', '.join(known) or 'none'}"
        )
    missing = [name for name in schema.get("required", []) if name not in parameters]
    if missing:
        raise ConfigError(
            f"{deployment} needs {', '.join(missing)}: add --param "
            + " --param ".join(f"{name}=VALUE" for name in missing)
        )


def pick_deployment(name: str, available: Sequence[str]) -> str:
    """The full ``flow/deployment`` name meant by ``name``.

    ``name`` is a full name, a flow name with one deployment (``reindex`` →
    ``reindex/nightly``) or a deployment name used by one flow. Raises :class:`InputError`
    saying what exists and how to deploy when nothing, or more than one, matches.
    """
    name = name.strip()
    if name in available:
        return name
    if "/" not in name:
        by_flow = [full for full in available if full.split("/", 1)[0] == name]
        by_name = [full for full in available if full.split("/", 1)[1] == name]
        for matches in (by_flow, by_name):
            if len(matches) == 1:
                return matches[0]
            if matches:
                raise InputError(
                    f"{name!r} names {len(matches)} deployments ({', '.join(sorted(matches))}): "
                    "give the full FLOW/DEPLOYMENT name"
                )
    deployed = ", ".join(sorted(available)) if available else "none"
    raise InputError(
        f"no deployment {name!r} on the Prefect server (deployed: {deployed}): deploy with "
        "`prefect deploy --all --prefect-file deployments/prefect.yaml`"
    )


def values_from_environment(
    spec: Mapping[str, Mapping[str, str]], environ: Mapping[str, str]
) -> dict[str, str]:
    """``{"cron": {"env": "TIEFVISION_REINDEX_CRON", "default": "0 2 * * *"}}`` → the
    variable's value when set and not empty, else the default; no default and unset is an
    error naming the variable.

    Why not Prefect's ``{{ $VAR }}``: it has no default, and an unset variable silently
    becomes "" (an empty cron, an empty catalog path) in the deployment.
    """
    values: dict[str, str] = {}
    for key, item in spec.items():
        name = item.get("env")
        value = environ.get(name, "").strip() if name else ""
        if not value:
            if "default" not in item:
                hint = f" ({item['help']})" if item.get("help") else ""
                raise ConfigError(f"{name} is not set: export it{hint}, then deploy again")
            value = str(item["default"])
        values[key] = value
    return values


def _with_env_default(template: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    patched = copy.deepcopy(dict(template))
    variable = patched["variables"]["properties"]["env"]
    variable["default"] = {**variable.get("default", {}), **env}
    return patched


def cpu_pool_template(base: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """The process pool's job template with ``env`` as every run's default environment.

    Why a default and not deployment job variables: a deployment that sets ``env`` replaces
    the whole mapping, so the pool-wide settings (the result storage block) would vanish.
    Everything else (store URL, credentials) comes from the worker's own environment, which
    process-worker runs inherit.
    """
    return _with_env_default(base, env)


GPU_RESOURCE = "nvidia.com/gpu"


def gpu_pool_template(
    base: Mapping[str, Any],
    env: Mapping[str, str],
    *,
    image: str,
    namespace: str,
    config_map: str,
    secret: str,
    gpus: int = 1,
) -> dict[str, Any]:
    """The Kubernetes pool's job template: every flow-run pod asks for ``gpus`` GPUs (a
    job variable, so a deployment can ask for more or none) and runs ``image``.

    A pod does not inherit the worker's environment: the settings come from the ConfigMap
    ``config_map`` and the credentials from the Secret ``secret`` (``envFrom``, the names
    infra/k8s uses). A missing one stops the pod with a message instead of letting a run
    write to a throw-away store inside the container.
    """
    patched = _with_env_default(base, env)
    properties = patched["variables"]["properties"]
    properties["image"]["default"] = image
    properties["namespace"]["default"] = namespace
    properties["gpus"] = {
        "title": "GPUs",
        "description": f"GPUs the flow-run pod requests (the {GPU_RESOURCE} limit).",
        "type": "integer",
        "minimum": 0,
        "default": gpus,
    }
    properties["env_config_map"] = {
        "title": "Settings ConfigMap",
        "description": "ConfigMap whose keys become the run's environment "
        "(TIEFVISION_STORE_URL, TIEFVISION_S3_ENDPOINT_URL, …).",
        "type": "string",
        "default": config_map,
    }
    properties["env_secret"] = {
        "title": "Credentials Secret",
        "description": "Secret whose keys become the run's environment "
        "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, TIEFVISION_DATABASE_URL).",
        "type": "string",
        "default": secret,
    }
    manifest = patched["job_configuration"]["job_manifest"]
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    container.setdefault("resources", {}).setdefault("limits", {})[GPU_RESOURCE] = "{{ gpus }}"
    container["envFrom"] = [
        {"configMapRef": {"name": "{{ env_config_map }}"}},
        {"secretRef": {"name": "{{ env_secret }}"}},
    ]
    return patched
