"""Readers for the files under infra/: what the tests compare with the code.

Why parse instead of grep: YAML anchors and merge keys (compose.yaml) and Dockerfile line
continuations make text search miss or double-count; the tests should see exactly what
Docker Compose, kubectl and docker build see.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import yaml
from pydantic import AliasChoices

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"

# `${NAME}`, `${NAME:-default}`, `${NAME:?message}`; `$${...}` is an escaped dollar.
_INTERPOLATION = re.compile(r"(?<!\$)\$\{(\w+)(?:(:?[-?])([^}]*))?\}")
_PREFECT_YAML_ENV = re.compile(r"\{\{\s*\$(\w+)\s*\}\}")


@cache
def compose() -> dict:
    return yaml.safe_load((INFRA / "compose.yaml").read_text())


def compose_interpolations() -> dict[str, str]:
    """Variables compose.yaml takes from the shell or infra/.env, with their defaults."""
    found: dict[str, str] = {}
    for name, _op, default in _INTERPOLATION.findall((INFRA / "compose.yaml").read_text()):
        found.setdefault(name, default)
    return found


def interpolate(value: str, given: Mapping[str, str] | None = None) -> str:
    """What compose passes for ``value`` with the variables ``given`` (e.g. .env.example's),
    else their defaults (a required one without a value: a dummy)."""

    def one(match: re.Match) -> str:
        if given and match[1] in given:
            return given[match[1]]
        return match[3] if match[2].endswith("-") else "dummy"

    return _INTERPOLATION.sub(one, str(value))


def env_example() -> dict[str, str]:
    """The variables of infra/.env.example: what a user starts infra/.env from."""
    return {
        line.split("=", 1)[0]: line.split("=", 1)[1]
        for line in (INFRA / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }


def command_words(service: dict, key: str = "command") -> list[str]:
    value = service.get(key) or []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def option(words: list[str], flag: str) -> str | None:
    """The value after ``flag`` in an argument list (``--pool tiefvision-cpu``)."""
    return words[words.index(flag) + 1] if flag in words else None


@cache
def k8s_documents() -> tuple[tuple[str, dict], ...]:
    """(file name, object) for every manifest kustomization.yaml lists, in its order."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return tuple(
        (name, doc)
        for name in kustomization["resources"]
        for doc in yaml.safe_load_all((K8S / name).read_text())
        if doc
    )


def k8s_containers() -> list[dict]:
    return [
        container
        for _, doc in k8s_documents()
        if doc["kind"] == "Deployment"
        for container in doc["spec"]["template"]["spec"]["containers"]
    ]


def is_worker(command: list[str]) -> bool:
    return command[:3] == ["prefect", "worker", "start"]


def is_web(command: list[str]) -> bool:
    return command[:2] == ["tiefvision", "serve"]


def k8s_workers() -> list[dict]:
    return [c for c in k8s_containers() if is_worker(c["command"])]


def k8s_web() -> list[dict]:
    return [c for c in k8s_containers() if is_web(c["command"])]


def k8s_services() -> list[dict]:
    return [doc for _, doc in k8s_documents() if doc["kind"] == "Service"]


def serve_options() -> dict[str, object]:
    """``tiefvision serve``'s options (``--port`` …) and their defaults, from the CLI itself."""
    import typer.main

    from tiefvision_cli.main import app

    command = typer.main.get_command(app).commands["serve"]
    return {opt: param.default for param in command.params for opt in param.opts}


def web_api_paths(tmp_path: Path) -> dict[str, set[str]]:
    """Path -> HTTP methods of the web app's API (its OpenAPI document), built over an
    empty local store."""
    from tiefvision_core.config import Settings
    from tiefvision_web import create_app

    app = create_app(Settings(store_url=str(tmp_path / "store")))
    return {path: {m.upper() for m in ops} for path, ops in app.openapi()["paths"].items()}


@cache
def prefect_yaml() -> dict:
    return yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())


def prefect_yaml_env() -> set[str]:
    """Variables deployments/prefect.yaml reads: Prefect's ``{{ $NAME }}`` and the
    ``env: NAME`` entries of TiefVision's deploy-time build step."""

    def env_entries(node: object) -> set[str]:
        if isinstance(node, dict):
            own = {node["env"]} if isinstance(node.get("env"), str) else set()
            return own.union(*(env_entries(value) for value in node.values()))
        if isinstance(node, list):
            return set().union(*(env_entries(item) for item in node))
        return set()

    text = (ROOT / "deployments" / "prefect.yaml").read_text()
    return set(_PREFECT_YAML_ENV.findall(text)) | env_entries(prefect_yaml())


def settings_env_names() -> set[str]:
    """Every environment variable Settings reads: its aliases, else prefix + field name."""
    from tiefvision_core.config import Settings

    prefix = Settings.model_config["env_prefix"]
    names: set[str] = set()
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {choice.upper() for choice in alias.choices if isinstance(choice, str)}
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{field_name}".upper())
    return names


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of infra/Dockerfile, continuations joined, comments dropped."""
    lines = [
        line
        for line in (INFRA / "Dockerfile").read_text().splitlines()
        if not line.lstrip().startswith("#")
    ]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for parts in (line.strip().split(None, 1) for line in joined.splitlines() if line.strip())
    ]


def dockerfile_env_names() -> set[str]:
    names: set[str] = set()
    for instruction, args in dockerfile():
        if instruction == "ENV":
            names |= {word.split("=", 1)[0] for word in shlex.split(args) if "=" in word}
    return names


def dockerfile_copy_sources() -> list[str]:
    """Sources of COPY instructions that read the build context (not ``--from`` a stage)."""
    sources: list[str] = []
    for instruction, args in dockerfile():
        words = shlex.split(args)
        if instruction in ("COPY", "ADD") and not any(w.startswith("--from") for w in words):
            sources += [w for w in words if not w.startswith("--")][:-1]
    return sources
