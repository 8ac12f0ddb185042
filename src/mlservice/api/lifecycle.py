"""The served model's lifecycle: verified loading, hot reload, the bundle watcher, SIGTERM drain.

``ModelReloader`` loads and verifies a bundle (hashes, skops allowlist: ``Predictor.from_path``),
checks that it still fits the request schema the API was built from, and only then swaps it into
``ModelState.predictor`` with one assignment. Requests read that slot once each, so a swap under
load fails no request: the ones in flight finish on the old model. A bundle that fails any check
leaves the old model serving; the reason goes to the log, to ``/health/ready`` and to the caller.

Triggers: the lifespan startup, ``POST /admin/reload``, and (when ``watch_interval_s > 0``) a
watcher that looks every few seconds at where the bundle path (usually the ``model_latest``
symlink) points and at its files' identity. ``promote_latest`` swaps that symlink atomically and
bundles are renamed into place whole, so the watcher never sees half a bundle.

``serving_lifecycle`` also hooks SIGTERM: uvicorn only runs the lifespan shutdown after it has
stopped accepting and drained, which is too late to tell a load balancer. The hook marks the app
draining at once (``/health/ready`` → 503, responses carry ``Connection: close``) and hands the
signal to uvicorn ``shutdown_delay_s`` later; uvicorn then lets in-flight requests finish within
its ``--timeout-graceful-shutdown``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from prometheus_client import Counter, Gauge
from starlette.concurrency import run_in_threadpool

from mlservice.api.deps import ModelState
from mlservice.api.metrics import ApiMetrics
from mlservice.api.monitoring import build_window
from mlservice.api.settings import ApiSettings
from mlservice.inference import FeatureInfo, Predictor

__all__ = [
    "ModelReloader",
    "ReloadResult",
    "public_reason",
    "request_contract",
    "serving_lifecycle",
]

log = logging.getLogger("mlservice.api.lifecycle")

_Contract = tuple[tuple[Any, ...], ...]
_SourceKey = tuple[Any, ...] | None
_DRAIN_POLL_S = 0.05
_MAX_WATCHED_FILES = 1000


def request_contract(features: Sequence[FeatureInfo]) -> _Contract:
    """What the generated request schema depends on; a reloaded bundle must keep it."""
    return tuple(
        (f.name, f.kind, f.nullable, f.categories if f.closed else None, f.closed)
        for f in features
    )


def public_reason(exc: BaseException, path: Path) -> str:
    """The first line of the error, with server paths cut to the bundle directory's name."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    names = {str(path): path.name, str(path.absolute()): path.name}
    with contextlib.suppress(OSError, RuntimeError):
        real = path.resolve()
        names[str(real)] = real.name
    for full in sorted(names, key=len, reverse=True):  # longest first: no partial replacement
        text = text.replace(full, names[full])
    return text


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _tree_key(root: Path) -> tuple[Any, ...]:
    """Name and identity of every file under ``root`` (a bundle: a dozen files at most).

    Every file, not only the manifest: a bundle copied in file by file (rsync, a volume sync)
    fails its first load on a file that has not arrived yet, and must be tried again when it
    does; a key that did not change would never retry.
    """
    entries: list[tuple[str, tuple[int, int, int] | None]] = []
    try:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                full = Path(dirpath) / name
                entries.append((str(full.relative_to(root)), _stat_key(full)))
            if len(entries) > _MAX_WATCHED_FILES:  # not a bundle: identity of the top only
                break
    except OSError:
        return ()
    return tuple(entries)


def _source_key(path: Path) -> _SourceKey:
    """Where ``path`` points now and the identity of every file of the bundle there."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, dangling symlink, symlink loop
        return None
    return (str(real), _tree_key(real))


@dataclass(frozen=True)
class ReloadResult:
    """One load attempt: ``ok`` with the new predictor, or the reason the old one still serves."""

    ok: bool
    trigger: str
    seconds: float
    predictor: Predictor | None
    previous: Predictor | None = None
    error: str = ""


class ModelReloader:
    """Loads, verifies and swaps the model of one app; one load at a time."""

    def __init__(
        self,
        state: ModelState,
        metrics: ApiMetrics,
        *,
        features: Sequence[FeatureInfo] | None,
        task: str | None,
        settings: ApiSettings | None = None,
    ) -> None:
        self.state = state
        self.settings = settings
        self.metrics = metrics
        self._contract = request_contract(features) if features else None
        self._task = task
        self._lock = threading.Lock()
        self._seen: _SourceKey = None
        self._reloads = Counter(
            "mlservice_model_reloads_total",
            "Model loads by trigger (startup, admin, watch) and result (ok, failed).",
            ["trigger", "result"],
            registry=metrics.registry,
        )
        self._info = Gauge(
            "mlservice_model_info",
            "1 for the model being served, labelled with its name, version and bundle.",
            ["name", "version", "bundle"],
            registry=metrics.registry,
        )

    # -------------------------------------------------------------------------- triggers
    def reload(self, *, trigger: str) -> ReloadResult:
        """Load the bundle at the state's path now (waits for a load already running)."""
        with self._lock:
            return self._load(trigger)

    def poll(self) -> ReloadResult | None:
        """Reload when the bundle path points elsewhere or its files changed since the last load.

        A bundle that failed is not tried again until it changes (no retry storm in the logs).
        """
        if _source_key(self.state.path) == self._seen:
            return None
        if not self._lock.acquire(blocking=False):  # a reload is running: look again next tick
            return None
        try:
            if _source_key(self.state.path) == self._seen:
                return None
            return self._load("watch")
        finally:
            self._lock.release()

    # ---------------------------------------------------------------------------- loading
    def _check(self, predictor: Predictor) -> None:
        if self._task is not None and predictor.task != self._task:
            raise ValueError(
                f"bundle {predictor.bundle.path.name!r} is a {predictor.task} model, this server "
                f"serves a {self._task} API; restart the server to serve it"
            )
        if self._contract is None:
            return
        new = request_contract(predictor.features)
        new_names = [row[0] for row in new]
        old_names = [row[0] for row in self._contract]
        if new_names != old_names:
            raise ValueError(
                f"bundle {predictor.bundle.path.name!r} has features {new_names}, the API was "
                f"built for {old_names}; restart the server to serve it"
            )
        changed = [old[0] for old, cur in zip(self._contract, new, strict=True) if old != cur]
        if changed:
            raise ValueError(
                f"bundle {predictor.bundle.path.name!r} changes the type, categories or "
                f"nullability of features {changed}; restart the server to serve it"
            )

    def _load(self, trigger: str) -> ReloadResult:
        state = self.state
        started = time.perf_counter()
        key = _source_key(state.path)  # taken first: a change during the load is seen next tick
        previous = state.predictor
        try:
            predictor = Predictor.from_path(state.path)
            self._check(predictor)
            window = build_window(predictor, self.settings) if self.settings else None
        except Exception as exc:  # any failure: the old model (if any) keeps serving
            self._seen = key
            return self._failed(trigger, public_reason(exc, state.path), previous, started)
        state.window = window  # a new model starts a new window (its own reference)
        state.predictor = predictor  # the swap: one assignment, read once per request
        state.error = ""
        state.reload_error = ""
        self._seen = key
        seconds = time.perf_counter() - started
        self._reloads.labels(trigger=trigger, result="ok").inc()
        self.metrics.model_loaded.set(1)
        self._info.clear()
        self._info.labels(
            name=predictor.name, version=predictor.version, bundle=predictor.bundle.path.name
        ).set(1)
        fields: dict[str, Any] = {
            "trigger": trigger,
            "model": predictor.name,
            "version": predictor.version,
            "bundle": predictor.bundle.path.name,
            "seconds": round(seconds, 3),
        }
        if previous is not None:
            fields["previous_bundle"] = previous.bundle.path.name
            _TUNING.after_reload()
        log.info("model loaded", extra={"fields": fields})
        return ReloadResult(True, trigger, seconds, predictor, previous)

    def _failed(
        self, trigger: str, reason: str, previous: Predictor | None, started: float
    ) -> ReloadResult:
        state = self.state
        self._reloads.labels(trigger=trigger, result="failed").inc()
        fields: dict[str, Any] = {"trigger": trigger, "reason": reason}
        if previous is None:
            state.error = reason
            self.metrics.model_loaded.set(0)
            log.error("model not loaded", extra={"fields": fields})
        else:
            state.reload_error = reason
            fields.update(serving=previous.bundle.path.name, version=previous.version)
            log.error("model reload failed; the previous model keeps serving",
                      extra={"fields": fields})
        return ReloadResult(
            False, trigger, time.perf_counter() - started, previous, previous, reason
        )


# ------------------------------------------------------------------------------ lifespan
async def _watch(reloader: ModelReloader, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await run_in_threadpool(reloader.poll)
        except Exception:  # the watcher must outlive any surprise; the next tick tries again
            log.exception("bundle watcher failed")


class _DrainOnSigterm:
    """Readiness 503 at SIGTERM; uvicorn's handler (stop accepting, drain) ``delay_s`` later."""

    def __init__(self, state: ModelState, delay_s: float) -> None:
        self.state = state
        self.delay_s = delay_s
        self._previous: Callable[[int, FrameType | None], Any] | None = None
        self._handover_at: float | None = None

    def install(self) -> bool:
        # Signals belong to the main thread; under TestClient the lifespan runs elsewhere.
        if threading.current_thread() is not threading.main_thread():
            return False
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):  # no server handler to hand over to (SIG_DFL/SIG_IGN)
            return False
        self._previous = previous
        signal.signal(signal.SIGTERM, self._on_signal)
        return True

    def uninstall(self) -> None:
        if self._previous is not None and signal.getsignal(signal.SIGTERM) == self._on_signal:
            signal.signal(signal.SIGTERM, self._previous)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: flags only; the event loop does the rest (see ``run``).
        if self.state.draining or self.delay_s <= 0:  # second SIGTERM, or no delay: stop now
            self.state.draining = True
            self._hand_over(sig, frame)
            return
        self.state.draining = True
        self._handover_at = time.monotonic() + self.delay_s

    def _hand_over(self, sig: int, frame: FrameType | None) -> None:
        self._handover_at = None
        if self._previous is not None:
            self._previous(sig, frame)

    async def run(self) -> None:
        """Log the drain and hand the signal over once the delay has passed (polled, like
        uvicorn's own main loop: a signal handler should not touch the event loop)."""
        announced = False
        while True:
            await asyncio.sleep(_DRAIN_POLL_S)
            if self.state.draining and not announced:
                announced = True
                log.warning(
                    "SIGTERM: not ready any more; still serving for the shutdown delay",
                    extra={"fields": {"shutdown_delay_s": self.delay_s}},
                )
            due = self._handover_at
            if due is not None and time.monotonic() >= due:
                log.info("shutdown delay over; uvicorn stops accepting and drains requests")
                self._hand_over(signal.SIGTERM, None)


class _ProcessTuning:
    """Interpreter settings shared by the apps of one process (tests run several): the first
    app to start saves the process's own, the last to stop restores them.

    * the thread switch interval (``ApiSettings.switch_interval_s``);
    * the cyclic garbage collector (``ApiSettings.gc_threshold``): everything alive once the
      model is loaded (modules, the model, the schemas) is frozen out of the collector's
      scans (``gc.freeze``) and the first generation's threshold raised. A 1,000-row batch
      allocates thousands of short-lived containers, each of which used to count towards a
      collection that walked the whole heap (``python -m bench.serving``: 1,000-row batches
      ~102 → ~130 req/s, p99 170 → 95 ms). Request objects are freed by reference counting;
      only reference cycles wait for the (rarer) collections. A reload re-freezes, so the
      replaced model is collected, not kept frozen.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._switch = sys.getswitchinterval()
        self._thresholds = gc.get_threshold()
        self._gc = False

    def enter(self, switch_interval_s: float | None, gc_threshold: int | None) -> None:
        with self._lock:
            if self._users == 0:
                self._switch = sys.getswitchinterval()
                self._thresholds = gc.get_threshold()
            self._users += 1
            if switch_interval_s is not None:
                sys.setswitchinterval(switch_interval_s)
            if gc_threshold:
                self._gc = True
                gc.collect()
                gc.freeze()
                gc.set_threshold(gc_threshold, *self._thresholds[1:])

    def after_reload(self) -> None:
        """Let the collector see the replaced model, then freeze the new one."""
        with self._lock:
            if self._users and self._gc:
                gc.unfreeze()
                gc.collect()
                gc.freeze()

    def leave(self) -> None:
        with self._lock:
            self._users = max(self._users - 1, 0)
            if self._users == 0:
                sys.setswitchinterval(self._switch)
                if self._gc:
                    gc.unfreeze()
                    gc.set_threshold(*self._thresholds)
                    self._gc = False


_TUNING = _ProcessTuning()


@contextlib.asynccontextmanager
async def serving_lifecycle(
    reloader: ModelReloader,
    *,
    watch_interval_s: float,
    shutdown_delay_s: float,
    switch_interval_s: float | None = None,
    gc_threshold: int | None = None,
) -> AsyncIterator[None]:
    """Load the model, then run the watcher and the SIGTERM hook until the app shuts down.

    ``switch_interval_s`` and ``gc_threshold`` tune the interpreter while serving (see
    ``ApiSettings``); the process's own settings are restored when the last app that changed
    them shuts down.
    """
    await run_in_threadpool(reloader.reload, trigger="startup")
    tuned = switch_interval_s is not None or gc_threshold is not None
    if tuned:
        _TUNING.enter(switch_interval_s, gc_threshold)
    tasks: list[asyncio.Task[None]] = []
    if watch_interval_s > 0:
        tasks.append(asyncio.create_task(_watch(reloader, watch_interval_s)))
    drain = _DrainOnSigterm(reloader.state, shutdown_delay_s)
    if drain.install():
        tasks.append(asyncio.create_task(drain.run()))
    try:
        yield
    finally:
        if tuned:
            _TUNING.leave()
        drain.uninstall()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
