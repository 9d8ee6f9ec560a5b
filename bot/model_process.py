"""Models loaded and run in a worker process, so model work never holds the bot's GIL.

A load's garbage collections and the tokenizer's parser hold the GIL, which a thread cannot avoid
(benchmarks/README.md, "Loop lag"), so :class:`ProcessLoader` runs one child process
(``python -m bot.model_process``) that loads the models and generates; the bot keeps a
:class:`ProcessGenerator` handle per model and never imports torch. What happens when a handle is
dropped or the child dies: docs/generation.md ("The bot's model cache").
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import pickle
import queue
import socket
import subprocess
import sys
import threading
import weakref
from collections.abc import Collection
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.errors import DoppeltweetError, ModelError

if TYPE_CHECKING:
    from training.generation import GenerationResult

log = logging.getLogger(__name__)

#: Seconds :meth:`ProcessLoader.close` waits for the child to exit before killing it.
STOP_TIMEOUT_S = 10.0

_STOPPED = "The generation process stopped unexpectedly; try again (the model is loaded anew)."


class _Worker:
    """One child process and the two threads that send to and read from it."""

    def __init__(self, threads: int) -> None:
        from bot.child_env import GENERATION_SECRETS, child_environment

        ours, theirs = socket.socketpair()
        env = child_environment(os.environ, secrets_kept=GENERATION_SECRETS)
        # The child imports this package the way the bot did, wherever it was run from.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bot.model_process", str(theirs.fileno()), str(threads)],
                pass_fds=[theirs.fileno()],
                env=env,
                stdin=subprocess.DEVNULL,
            )
        except OSError as error:
            ours.close()
            raise ModelError(f"The generation process could not start ({error}).") from error
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        self._ids = itertools.count(1)
        self._pending: dict[int, Future[Any]] = {}
        self._lock = threading.Lock()
        self.alive = True
        # Every send goes through this queue (SimpleQueue.put is safe in a finaliser), so a
        # handle's finaliser never writes to the socket in the middle of another message.
        self._outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._send_loop, name="model-process-send")
        self._reader = threading.Thread(target=self._read_loop, name="model-process-read")
        self._sender.daemon = self._reader.daemon = True
        self._sender.start()
        self._reader.start()

    def call(self, op: str, *args: Any) -> Any:
        """Run ``op`` in the child and return its result (or raise its error); blocks."""
        future: Future[Any] = Future()
        with self._lock:
            if not self.alive:
                raise ModelError(_STOPPED)
            request = next(self._ids)
            self._pending[request] = future
        self._outbox.put((request, op, args))
        return future.result()

    def forget(self, handle: int) -> None:
        """Tell the child to drop a model (no answer); safe from a finaliser."""
        if self.alive:
            self._outbox.put((0, "drop", (handle,)))

    def _send_loop(self) -> None:
        while True:
            message = self._outbox.get()
            if message is None:
                with contextlib.suppress(OSError):
                    self._conn.send(None)
                return
            try:
                self._conn.send(message)
            except (OSError, ValueError, pickle.PicklingError) as error:
                with self._lock:
                    future = self._pending.pop(message[0], None)
                if future is not None:
                    future.set_exception(ModelError(f"The request could not be sent ({error})."))

    def _read_loop(self) -> None:
        while True:
            try:
                request, ok, value = self._conn.recv()
            except (EOFError, OSError, pickle.UnpicklingError):
                break
            with self._lock:
                future = self._pending.pop(request, None)
            if future is None:
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        with self._lock:
            self.alive = False
            pending, self._pending = self._pending, {}
        for future in pending.values():
            future.set_exception(ModelError(_STOPPED))
        with contextlib.suppress(OSError):
            self._conn.close()

    def stop(self, timeout_s: float) -> None:
        self._outbox.put(None)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("The generation process did not stop in %.0f s; killing it.", timeout_s)
            self.process.kill()
            self.process.wait()
        self._sender.join(timeout_s)
        self._reader.join(timeout_s)


class ProcessGenerator:
    """A model loaded in the worker process; what :class:`bot.model_cache.ModelCache` needs."""

    def __init__(
        self,
        worker: _Worker,
        handle: int,
        path: Path,
        memory_bytes: int,
        backend: str,
        shared: tuple[str, int] = ("", 0),
    ) -> None:
        self.path = path
        self.backend = backend
        #: Names the weights this model shares with others (a LoRA base; empty: none), and
        #: their bytes, as :class:`~training.generation.TweetGenerator` reports them.
        self.shared_key, self.shared_bytes = shared
        self._worker = worker
        self._handle = handle
        self._memory_bytes = memory_bytes
        self._finalizer = weakref.finalize(self, worker.forget, handle)

    @property
    def memory_bytes(self) -> int:
        """What the model alone holds in the worker process (a LoRA model: its adapter)."""
        return self._memory_bytes

    @property
    def alive(self) -> bool:
        """False once the worker process has stopped (the model must be loaded again)."""
        return self._worker.alive

    def generate(
        self, prompt: str, *, n: int = 1, seed: int | None = None, exclude: Collection[str] = ()
    ) -> GenerationResult:
        """:meth:`TweetGenerator.generate` in the worker process; blocks the calling thread."""
        result: GenerationResult = self._worker.call(
            "generate", self._handle, prompt, n, seed, tuple(exclude)
        )
        return result

    def close(self) -> None:
        """Drop the model in the worker process now (also done when the handle is collected)."""
        self._finalizer()


class ProcessLoader:
    """The model cache's loader: models live in one worker process, started on the first load.

    ``threads`` is how many requests the worker serves at once (loads and generations).
    """

    def __init__(self, *, threads: int = 2) -> None:
        if threads < 1:
            raise ValueError("the worker process needs at least one thread")
        self.threads = threads
        self._worker: _Worker | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _current(self) -> _Worker:
        with self._lock:
            if self._closed:
                raise ModelError("The generation process was shut down with the bot.")
            if self._worker is None or not self._worker.alive:
                if self._worker is not None:
                    log.warning("The generation process stopped; starting a new one.")
                self._worker = _Worker(self.threads)
            return self._worker

    def __call__(self, path: Path, *, backend: str | None = None) -> ProcessGenerator:
        """Load ``path`` in the worker (``backend`` as :meth:`TweetGenerator.load` takes it)."""
        worker = self._current()
        handle, memory_bytes, kind, shared = worker.call("load", str(path), backend)
        return ProcessGenerator(worker, handle, Path(path), memory_bytes, kind, shared)

    @property
    def pid(self) -> int | None:
        """The worker process's id while it runs (None before the first load)."""
        worker = self._worker
        return worker.process.pid if worker is not None and worker.alive else None

    def close(self) -> None:
        """Stop the worker process (waiting up to :data:`STOP_TIMEOUT_S` for it)."""
        with self._lock:
            self._closed = True
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop(STOP_TIMEOUT_S)


# The child's side ------------------------------------------------------------------------------


def _portable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling as it is, else a RuntimeError naming it."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


def serve(conn: Connection, threads: int) -> None:
    """The worker's loop: answer load / generate / drop requests until told to stop."""
    from training.generation import TweetGenerator

    models: dict[int, TweetGenerator] = {}
    ids = itertools.count(1)
    send_lock = threading.Lock()

    def answer(request: int, ok: bool, value: Any) -> None:
        with send_lock:
            conn.send((request, ok, value))

    def handle(request: int, op: str, args: tuple[Any, ...]) -> None:
        try:
            if op == "load":
                path, backend = args
                generator = TweetGenerator.load(Path(path), backend=backend)
                number = next(ids)
                models[number] = generator
                shared = (generator.shared_key, int(generator.shared_bytes))
                value: Any = (number, int(generator.memory_bytes), generator.backend, shared)
            elif op == "generate":
                number, prompt, n, seed, exclude = args
                model = models.get(number)
                if model is None:
                    raise ModelError("The model was unloaded; load it again.")
                value = model.generate(prompt, n=n, seed=seed, exclude=exclude)
            else:
                raise ValueError(f"unknown request {op!r}")
        except BaseException as error:  # everything goes back to the caller, who raises it
            if not isinstance(error, DoppeltweetError):
                log.exception("%s failed in the generation process", op)
            answer(request, False, _portable(error))
        else:
            answer(request, True, value)

    executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="model")
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break
        if message is None:
            break
        request, op, args = message
        if op == "drop":
            models.pop(args[0], None)
            continue
        executor.submit(handle, request, op, args)
    models.clear()
    # Queued requests are dropped; running ones finish (their answers may no longer be read).
    executor.shutdown(wait=True, cancel_futures=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m bot.model_process FD THREADS``: serve the bot on the inherited socket FD."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not all(a.isdigit() for a in args):
        print("usage: python -m bot.model_process FD THREADS (started by the bot)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s model-process %(message)s")
    conn = Connection(int(args[0]))
    try:
        serve(conn, max(1, int(args[1])))
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
