"""Ray for a corpus job: import it, start a local one or join a cluster, size the actor pool,
and raise again on the driver the project's errors that actors raised.

Ray is imported on first use only (:func:`import_ray`), never when this module loads.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
import warnings
from typing import TYPE_CHECKING, Any

from sse_onnx import errors
from sse_onnx.errors import CorpusError, SSEError

if TYPE_CHECKING:
    from ray.data import Dataset

__all__ = [
    "CONNECT_SECONDS",
    "FREE_CPU_WAIT_SECONDS",
    "import_ray",
    "ordered",
    "pool_size",
    "raise_remote",
    "start_ray",
]

logger = logging.getLogger(__name__)

#: How long joining a cluster waits for its head to accept a connection.
CONNECT_SECONDS = 5.0
#: How long a job waits for Ray to have the CPUs it needs free before it gives up.
FREE_CPU_WAIT_SECONDS = 30.0
#: Ray's job environment: its workers list files too (over 200 inputs, several per task, each
#: in a thread), so they settle the import that ``settle_fsspec_http`` describes first.
_RUNTIME_ENV = {"worker_process_setup_hook": "sse_onnx.corpus.inputs.settle_fsspec_http"}
#: Ray's logger that warns, on every local start, that token authentication is on.
_RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
#: The last line of an actor's traceback when it raised one of the project's errors.
_REMOTE_ERROR = re.compile(r"^sse_onnx\.errors\.(\w+): (.+)$", re.MULTILINE)


def import_ray() -> Any:
    """The ``ray`` module, with ``ray.data`` imported.

    Raises:
        ImportError: naming the extra to install.
    """
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ImportError(
            "embedding a corpus needs Ray Data: pip install 'sse-onnx[scale]'."
        ) from exc
    # A corpus of fewer blocks than workers (a small or failing job) leaves actors idle, which
    # Ray Data warns about on every such run; the job is right as it is.
    warnings.filterwarnings(
        "ignore", message="The minimum number of concurrent actors", category=UserWarning
    )
    return ray


def start_ray(ray: Any, address: str | None, workers: int | None, cpus_per_worker: int) -> None:
    """Join the cluster at ``address``, or start a local Ray with a CPU for each actor and one.

    Raises:
        CorpusError: if nothing answers at ``address`` or the cluster refuses the driver.
    """
    if address is not None:
        _join(ray, address)
        return
    # Ray turns token authentication on for a cluster it starts (unless RAY_AUTH_MODE says
    # otherwise) and warns that it did on every run: the default is kept, the warning dropped.
    logging.getLogger(_RAY_AUTH_LOGGER).setLevel(logging.ERROR)
    pool = workers or max(1, (os.cpu_count() or 1) // cpus_per_worker)
    # One CPU more than the actors take, for the reading and re-batching tasks.
    cpus = pool * cpus_per_worker + 1
    logger.info("starting a local Ray with %d CPUs for %d workers", cpus, pool)
    ray.init(
        num_cpus=cpus,
        include_dashboard=False,
        logging_level=logging.WARNING,
        runtime_env=_RUNTIME_ENV,
    )


def _join(ray: Any, address: str) -> None:
    _check_reachable(address)
    logger.info("joining the Ray cluster at %s", address)
    try:
        ray.init(address=address, logging_level=logging.WARNING, runtime_env=_RUNTIME_ENV)
    except ConnectionError as exc:
        hint = "check the address and that its head is running (ray status)"
        if "AuthenticationError" in repr(exc.__cause__) or "token" in str(exc.__cause__):
            hint = (
                "it asks for a token: set RAY_AUTH_MODE=token, with the cluster's token "
                "in ~/.ray/auth_token or RAY_AUTH_TOKEN"
            )
        raise CorpusError(f"cannot join the Ray cluster at {address}: {hint}.") from exc


def _check_reachable(address: str) -> None:
    """Fail at once, in one line, when nothing listens at a ``host:port`` address.

    Ray itself retries a dead address for minutes, printing a warning every few seconds, then
    raises a ``ConnectionError`` that names the node's IP rather than the address given.
    """
    found = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d+)", address)
    if found is None:  # "auto", or a form Ray resolves itself
        return
    host, port = found.group(1), int(found.group(2))
    try:
        socket.create_connection((host, port), timeout=CONNECT_SECONDS).close()
    except OSError as exc:
        raise CorpusError(
            f"cannot join the Ray cluster at {address}: nothing answers there "
            f"({exc.strerror or exc}); start its head (ray start --head --port={port}) or pass "
            "the address it printed."
        ) from exc


def pool_size(ray: Any, workers: int | None, cpus_per_worker: int) -> int:
    """How many actors to start, leaving one CPU of the cluster for reading and re-batching.

    Waits up to :data:`FREE_CPU_WAIT_SECONDS` for the CPUs to be free (a previous job's actors
    are released asynchronously), then fails rather than let the job wait forever.

    Raises:
        ValueError: if the cluster has too few CPUs for ``workers``.
        CorpusError: if they are not free in time.
    """
    total = int(ray.cluster_resources().get("CPU", 0))
    pool = workers or max(1, (total - 1) // cpus_per_worker)
    needed = pool * cpus_per_worker + 1
    if needed > total:
        raise ValueError(
            f"{pool} workers of {cpus_per_worker} CPUs need {needed} CPUs (one for reading and "
            f"re-batching the input), but Ray has {total}; ask for fewer workers."
        )
    deadline = time.monotonic() + FREE_CPU_WAIT_SECONDS
    while (free := ray.available_resources().get("CPU", 0.0)) < needed:
        if time.monotonic() > deadline:
            raise CorpusError(
                f"Ray has {free:g} of its {total} CPUs free, and {pool} workers need {needed}: "
                "other jobs or actors hold the rest (the actors of a failed job in this process "
                "are released when Python collects them); wait, or ask for fewer workers."
            )
        time.sleep(0.5)
    return pool


def ordered(dataset: Dataset) -> Dataset:
    """The dataset, set to deliver blocks in input order, without Ray's own progress bars."""
    dataset.context.execution_options.preserve_order = True
    dataset.context.enable_progress_bars = False  # ours counts documents and tokens
    return dataset


def raise_remote(exc: BaseException) -> None:
    """Raise again the sse_onnx error an actor raised; return for any other error."""
    # Ray hands the driver the actor's traceback as text only, not the exception object.
    found = _REMOTE_ERROR.search(str(exc))
    kind = getattr(errors, found.group(1), None) if found else None
    if found is not None and isinstance(kind, type) and issubclass(kind, SSEError):
        raise kind(found.group(2)) from exc
