"""The store's lock around a flow's critical section, shared by every flow that publishes an
index (reindex, rebuild-index): one such run at a time per store.

Why one lock for both: they write the same ``indexes/<space>/CURRENT``; two at once, a
slower one that read older encodings would publish last (the pointer guard in
``tiefvision_core.vector_index.pointer`` refuses that, but only after its build is wasted).

Why the Prefect side lives here: a run killed with SIGKILL never reports its end, so it
stays Running in the UI forever. The run that takes over its stale lock knows it is dead
and which flow run it was (the lock records ``flow_run_id``), so it marks it Crashed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

from prefect import get_run_logger
from prefect.runtime import flow_run

from tasks.stores import get_store
from tiefvision_core.pipeline.reindex import LOCK_NAME
from tiefvision_core.storage.lock import LockHolder, StoreLock

__all__ = ["mark_crashed", "store_lock"]

# Locks written before ``flow_run_id`` existed name the run only in their label.
_RUN_ID_IN_LABEL = re.compile(r"\(([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\)")


def _holder_run_id(holder: LockHolder) -> str | None:
    if holder.flow_run_id:
        return holder.flow_run_id
    found = _RUN_ID_IN_LABEL.search(holder.label)
    return found.group(1) if found else None


def mark_crashed(flow_run_id: str, reason: str, logger) -> bool:
    """Set a dead lock holder's flow run Crashed (forced: no process will report it);
    True when done. Runs already in a final state are left as they are. Best effort: an
    unreachable server or an unknown run is a warning, never a failed run."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(flow_run_id))
            if run.state is not None and run.state.is_final():
                return False
            client.set_flow_run_state(
                run.id,
                Crashed(message=f"its store lock was broken by another run: {reason}"),
                force=True,
            )
    except Exception as error:
        logger.warning(
            "could not mark flow run %s Crashed (%s: %s); it may still show as Running",
            flow_run_id,
            type(error).__name__,
            error,
        )
        return False
    logger.warning("marked flow run %s Crashed: %s", flow_run_id, reason)
    return True


@contextmanager
def store_lock(store_url: str, timeout_s: float, ttl_s: float, *, job: str) -> Iterator[StoreLock]:
    """Hold the store's lock (``locks/reindex.json``) for the ``with`` block, waiting up to
    ``timeout_s`` for a run holding it (``LockBusy`` naming it when it does not finish in
    time). ``job`` names this flow in the lock, for whoever waits on it."""
    logger = get_run_logger()
    run_id = flow_run.get_id()
    label = f"{job} flow run {flow_run.get_name() or '?'} ({run_id or 'no id'})"
    lock = StoreLock(
        get_store(store_url), LOCK_NAME, label=label, ttl_s=ttl_s, flow_run_id=run_id or ""
    )

    def waiting(holder: LockHolder) -> None:
        logger.warning(
            "waiting up to %.0f s for the store lock, held by %s",
            timeout_s,
            holder.describe(time.time()),
        )

    def broken(holder: LockHolder, reason: str) -> None:
        dead = _holder_run_id(holder)
        logger.warning("took over the store lock of %s: %s", holder.label, reason)
        if dead and dead != run_id:
            mark_crashed(dead, reason, logger)

    with lock.hold(timeout_s, waiting, broken) as waited:
        logger.info("holding %s (waited %.1f s)", lock.key, waited)
        yield lock
