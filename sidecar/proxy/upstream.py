"""The connection to the inference container: a warm keep-alive pool, failure
classification for the sidecar's own error responses, and the readiness probe."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.settings import UpstreamSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UpstreamFailure:
    """Why the upstream gave no usable response, as the client and metrics see it."""

    status: int  # 502 or 504
    kind: str  # machine-readable, also the X-Lookout-Error header value
    detail: str


def classify_failure(error: BaseException, config: UpstreamSettings) -> UpstreamFailure:
    """Map an aiohttp exception to the sidecar's error response."""
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return UpstreamFailure(
            502, "upstream-connect-timeout",
            f"could not connect within {config.connect_timeout:g}s (connect timeout)",
        )
    if isinstance(error, aiohttp.ClientConnectorError):
        return UpstreamFailure(
            502, "upstream-unreachable", f"connection failed: {error.os_error or error}"
        )
    if isinstance(error, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        return UpstreamFailure(
            504, "upstream-timeout",
            f"no response data within {config.read_timeout:g}s (read timeout)",
        )
    if isinstance(error, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        return UpstreamFailure(
            502, "upstream-reset", f"connection closed or reset by the upstream: {error}"
        )
    if isinstance(error, aiohttp.ClientPayloadError):
        return UpstreamFailure(502, "upstream-bad-body", f"malformed response body: {error}")
    if isinstance(error, aiohttp.ClientResponseError):
        return UpstreamFailure(
            502, "upstream-bad-response", f"not a valid HTTP response: {error.message}"
        )
    return UpstreamFailure(502, "upstream-error", f"{type(error).__name__}: {error}")


def new_session(config: UpstreamSettings) -> aiohttp.ClientSession:
    """A session tuned to be a transparent hop: no cookies, no decompression, no
    automatic headers the client did not send, a bounded warm pool."""
    connector = aiohttp.TCPConnector(
        limit=config.upstream_pool_size,
        limit_per_host=config.upstream_pool_size,
        keepalive_timeout=config.upstream_keepalive,
        ttl_dns_cache=300,
        enable_cleanup_closed=False,
    )
    timeout = aiohttp.ClientTimeout(
        total=None, connect=None,
        sock_connect=config.connect_timeout, sock_read=config.read_timeout,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
        raise_for_status=False,
    )


class UpstreamProbe:
    """Is the inference container reachable? A TCP connect, or a GET on `ready_path`.

    Runs every `probe_interval` seconds to keep lookout_upstream_up current and on
    demand for /readyz. Never touches the request path.
    """

    name = "upstream_probe"

    def __init__(self, config: UpstreamSettings, session: aiohttp.ClientSession,
                 metrics: SidecarMetrics) -> None:
        self._config = config
        self._session = session
        self._metrics = metrics
        parts = urlsplit(config.upstream)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._task: asyncio.Task[None] | None = None
        self.last_result: tuple[bool, str] = (False, "not probed yet")

    async def check(self) -> tuple[bool, str]:
        timeout = self._config.connect_timeout
        try:
            if self._config.ready_path:
                url = self._config.upstream + self._config.ready_path
                probe_timeout = aiohttp.ClientTimeout(total=timeout + 1.0)
                async with self._session.get(url, timeout=probe_timeout) as response:
                    await response.read()
                    ok = 200 <= response.status < 300
                    result = (ok, f"GET {self._config.ready_path} -> {response.status}")
            else:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(self._host, self._port), timeout
                )
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                result = (True, f"TCP connect to {self._host}:{self._port} ok")
        except (OSError, TimeoutError, aiohttp.ClientError) as error:
            reason = str(error) or type(error).__name__
            result = (False, f"{self._config.upstream} unreachable: {reason}")
        if result[0] != self.last_result[0]:
            log.log(logging.INFO if result[0] else logging.WARNING, "upstream probe: %s",
                    result[1])
        self.last_result = result
        self._metrics.set_upstream_up(result[0])
        return result

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="upstream-probe")

    async def _loop(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:
                self._metrics.component_error(self.name)
                log.exception("upstream probe failed unexpectedly")
            await asyncio.sleep(self._config.probe_interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
