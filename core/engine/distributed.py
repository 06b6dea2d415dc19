"""Runs and predictions on a Dask cluster: connect, check the workers, map chunks, retry.

``--dask ADDRESS`` joins a running scheduler; ``--dask local`` or ``local:N`` starts a
``LocalCluster`` of N worker processes for the command and closes it after. Dask is an optional
extra (``pip install "imgclust[dask]"``) imported only here. Before any work every worker is
asked for its imgclust version and the plugins the run needs, so that a cluster that cannot do
the work fails in one line, not after an hour. Work is chunks (:mod:`imgclust.engine.chunks`):
a worker killed mid-run has its chunks run again elsewhere by Dask.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from imgclust import __version__
from imgclust.errors import ImgclustError, SettingsError, one_line
from imgclust.stages.host import get_registry

INSTALL_HINT = 'install it with: pip install "imgclust[dask]"'
CONNECT_TIMEOUT_S = 10  # the TCP connect and the scheduler's handshake, each
HANDSHAKE_MAX_BYTES = 1 << 20  # a scheduler's first message is a few hundred bytes
HANDSHAKE_MAX_FRAMES = 1024
SCHEDULER_HINT = "give the scheduler's address (usually tcp://HOST:8786) and check it is running"
WORKER_WAIT_S = 30
MAX_LOCAL_WORKERS = 256
_client: contextvars.ContextVar[Any] = contextvars.ContextVar("imgclust_dask_client", default=None)


def parse_address(value: Any) -> str:
    """``local``, ``local:N`` or a scheduler address (``tcp://host:8786``, ``host:8786``)."""
    text = str(value).strip()
    if text == "local" or re.fullmatch(r"local:\d+", text):
        if text != "local" and not 1 <= int(text[6:]) <= MAX_LOCAL_WORKERS:
            raise SettingsError(f"dask {text!r}: local:N needs 1 to {MAX_LOCAL_WORKERS} workers.")
        return text
    pattern = r"(?:(?:tcp|tls|inproc|ucx|ws|wss)://)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5}(?:/.*)?"
    if not isinstance(value, str) or not re.fullmatch(pattern, text):
        raise SettingsError(
            f"dask must be local, local:N or a scheduler address such as tcp://host:8786, "
            f"not {text!r:.60}."
        )
    return text


def import_distributed() -> Any:
    """``dask.distributed``, or one line that says how to install it."""
    try:
        import dask.distributed as distributed
    except ImportError:
        raise ImgclustError(f"--dask needs Dask, which is not installed: {INSTALL_HINT}.") from None
    return distributed


def current_client() -> Any:
    """The Dask client of the command running now, or None (then chunks run in this process)."""
    return _client.get()


@contextlib.contextmanager
def on_cluster(address: str, needs: Sequence[tuple[str, str]] = ()) -> Iterator[Any]:
    """Connect (or start a local cluster), check every worker, and close what was started."""
    distributed = import_distributed()
    address = parse_address(address)
    with contextlib.ExitStack() as stack:
        client = _connect(distributed, address, stack)
        stack.callback(client.close)
        check_workers(client, address, needs)
        token = _client.set(client)
        stack.callback(_client.reset, token)
        yield client


def _connect(distributed: Any, address: str, stack: contextlib.ExitStack) -> Any:
    import logging

    logging.getLogger("distributed").setLevel(logging.ERROR)
    if address.startswith("local"):
        workers = int(address[6:]) if ":" in address else max(1, os.cpu_count() or 1)
        # Dask's nannies set OMP_NUM_THREADS=1 and more in this process's environment while they
        # start workers; put it back, so that stages fitted here fit as in a run without Dask.
        environ = dict(os.environ)
        stack.callback(_restore_environ, environ)
        try:
            cluster = distributed.LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
        except (OSError, RuntimeError) as exc:
            raise ImgclustError(f"cannot start a local Dask cluster: {one_line(exc)}.") from None
        stack.callback(cluster.close)
        client = distributed.Client(cluster)
        _restore_environ(environ)
        return client
    probe_scheduler(address)
    try:
        return distributed.Client(address, timeout=f"{CONNECT_TIMEOUT_S}s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise ImgclustError(
            f"cannot reach the Dask scheduler at {address!r} ({one_line(exc)}): check the address "
            "and that the scheduler is running."
        ) from None


def probe_scheduler(address: str, timeout: float | None = None) -> None:
    """Check that a ``tcp://`` address answers with a Dask handshake before Dask connects.

    Dask bounds only the TCP connect (``distributed.comm.timeouts.connect``), not the handshake
    after it: an HTTP server (the dashboard on :8787) never answers and Dask waits forever, and
    a server that replies anything else has its first eight bytes read as a length to allocate.
    A scheduler sends its handshake as soon as it accepts, so this reads that message first,
    with a deadline and a size bound, and refuses anything else in one line. Other schemes
    (``tls://``, ``ws://``, ...) are left to Dask.
    """
    import socket
    import struct
    import time

    from distributed.comm.addressing import parse_address as split_scheme
    from distributed.comm.addressing import parse_host_port

    scheme, location = split_scheme(address)
    if scheme != "tcp":
        return
    limit = CONNECT_TIMEOUT_S if timeout is None else timeout
    try:
        host, port = parse_host_port(location)
    except ValueError as exc:
        raise SettingsError(f"dask address {address!r}: {one_line(exc)}.") from None
    deadline = time.monotonic() + limit
    try:
        with socket.create_connection((host, port), timeout=limit) as connection:
            header = _receive(connection, 8, deadline)
            (length,) = struct.unpack("=Q", header)
            if not 16 <= length <= HANDSHAKE_MAX_BYTES:
                raise _NotDask
            message = _receive(connection, length, deadline)
            (frames,) = struct.unpack("=Q", message[:8])
            if not 1 <= frames <= HANDSHAKE_MAX_FRAMES or 8 * (frames + 1) > length:
                raise _NotDask
    except _NotDask:
        raise ImgclustError(
            f"{address!r} is not a Dask scheduler (its first reply is not Dask's handshake): "
            f"{SCHEDULER_HINT}."
        ) from None
    except TimeoutError:
        raise ImgclustError(
            f"{address!r} did not answer as a Dask scheduler within {limit:g} s (an HTTP server "
            f"such as the dashboard?): {SCHEDULER_HINT}."
        ) from None
    except OSError as exc:
        raise ImgclustError(
            f"cannot reach the Dask scheduler at {address!r} ({one_line(exc)}): {SCHEDULER_HINT}."
        ) from None


class _NotDask(Exception):
    """The server's first bytes are not a Dask message."""


def _receive(connection: Any, count: int, deadline: float) -> bytes:
    """Exactly ``count`` bytes before ``deadline``; a closed connection is not Dask."""
    import time

    received = bytearray()
    while len(received) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        connection.settimeout(left)
        part = connection.recv(min(count - len(received), 1 << 16))
        if not part:
            raise _NotDask
        received += part
    return bytes(received)


def _restore_environ(environ: Mapping[str, str]) -> None:
    for key in [k for k in os.environ if k not in environ]:
        del os.environ[key]
    os.environ.update(environ)


def check_workers(client: Any, address: str, needs: Sequence[tuple[str, str]]) -> None:
    """Every worker runs this imgclust and has every stage the work needs; else one line."""

    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    except (TimeoutError, OSError):
        raise ImgclustError(
            f"the Dask scheduler at {address!r} has no workers (waited {WORKER_WAIT_S} s): "
            "start some with `dask worker ADDRESS`."
        ) from None
    try:
        answers = client.run(worker_probe, list(needs))
    except Exception as exc:
        raise ImgclustError(
            f"the Dask workers cannot run imgclust ({one_line(exc)}): install imgclust "
            f"{__version__} and the same plugins on every worker."
        ) from None
    for worker, answer in sorted(answers.items()):
        if answer.get("version") != __version__:
            raise ImgclustError(
                f"Dask worker {worker} runs imgclust {answer.get('version')}, this is "
                f"{__version__}: install the same version on every worker."
            )
        if answer.get("missing"):
            missing = ", ".join(answer["missing"])
            raise ImgclustError(
                f"Dask worker {worker} lacks {missing}: install the same plugins on every worker."
            )


def worker_probe(needs: Sequence[Sequence[str]]) -> dict[str, Any]:
    """On a worker: its imgclust version and which of the needed stages it cannot build."""

    registry = get_registry()
    missing = [f"{kind[:-1]} {name!r}" for kind, name in needs if registry.find(kind, name) is None]
    return {"version": __version__, "missing": missing, "pid": os.getpid()}


def stages_of(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(kind, name) of every stage a run's workers build: its encoders, clusterer and refiners."""
    needs = [("encoders", str(e["name"])) for e in config.get("encoder") or []]
    if config.get("clusterer"):
        needs.append(("clusterers", str(config["clusterer"]["name"])))
    needs += [("refiners", str(r["name"])) for r in config.get("refiner") or []]
    return needs


def check_folder_visible(client: Any, folder: str) -> None:
    """Workers write chunks into the run folder: every one of them must see it."""
    answers = client.run(os.path.isdir, folder)
    blind = sorted(w for w, seen in answers.items() if not seen)
    if blind:
        raise ImgclustError(
            f"Dask worker {blind[0]} cannot see {folder!r}: run folders must be on a "
            "filesystem every worker mounts at the same path (see docs/scale.md)."
        )


def run_on_cluster(
    client: Any, run_chunk: Callable[[Any], Any], tasks: Sequence[Any], log: Any
) -> Iterator[Any]:
    """Run ``run_chunk`` on each chunk task on the workers; yield each one's small result as it
    finishes.

    A worker that dies has its unfinished tasks rescheduled by Dask (a finished chunk's result is
    released once received, so it is not run again); a chunk that fails stops the run in one
    line, and the chunks still pending are cancelled.
    """
    distributed = import_distributed()
    if tasks:
        check_folder_visible(client, tasks[0].store)
    futures = client.map(run_chunk, tasks, key=[f"imgclust-chunk-{t.index}-{id(t)}" for t in tasks])
    finished = 0
    try:
        for future in distributed.as_completed(futures):
            try:
                result = future.result()
            except ImgclustError:
                raise
            except distributed.KilledWorker:
                raise ImgclustError(
                    "a chunk's workers died repeatedly (out of memory?): give workers more memory "
                    "or lower chunk_size."
                ) from None
            except Exception as exc:
                raise ImgclustError(f"a Dask worker failed on a chunk: {one_line(exc)}.") from None
            # Its result is in hand: released, a chunk is not run again when the worker that
            # holds the result dies later (nor writes into the run after it is finished).
            future.release()
            finished += 1
            log(f"assigned chunk {finished} of {len(tasks)} on the cluster")
            yield result
    finally:
        client.cancel([f for f in futures if not f.done()])
