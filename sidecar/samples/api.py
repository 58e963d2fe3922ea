"""The sample API on the admin port: list, show, draw and export stored samples.

Every route needs `Authorization: Bearer <admin token>` (compared in constant time):
missing -> 401, wrong -> 403, too many wrong guesses -> 429 (`door.py`). With no token
configured the API is off and every route says so (404), rather than serving
thumbnails of user traffic to anyone who can reach the admin port. SQLite and file
reads run in a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from functools import partial

from aiohttp import web

from lookout.sidecar.samples.door import API, Door, Verdict
from lookout.sidecar.samples.query import EXPORT_MAX, SOURCES, QueryError, SampleQuery
from lookout.sidecar.samples.store import Sample, SampleStore

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CHUNK = 256 * 1024


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


class SampleApi:
    def __init__(self, door: Door, store: Callable[[], SampleStore | None],
                 sampling_on: bool) -> None:
        self._door = door
        self._store = store
        self._sampling_on = sampling_on

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/samples", self._guarded(self.list))
        app.router.add_get("/samples/export", self._guarded(self.export))
        app.router.add_get("/samples/{id}", self._guarded(self.show))
        app.router.add_get("/samples/{id}/image", self._guarded(self.image))

    def _guarded(self, handler: Callable[[web.Request, SampleStore], Awaitable[web.StreamResponse]]
                 ) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if not self._door.token.value:
                return _error(404, "the sample API is off: no admin token is configured "
                              "(set admin_token_file or LOOKOUT_ADMIN_TOKEN)")
            scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not presented:
                return _error(401, "bearer token required",
                              **{"WWW-Authenticate": 'Bearer realm="lookout"'})
            # any bytes the client sent, as aiohttp decoded them: never an encoding error
            verdict = self._door.check(API, request.remote,
                                       lambda: self._door.matches(presented))
            if verdict is Verdict.LIMITED:
                wait = self._door.retry_after(request.remote) or 1
                return _error(429, f"too many wrong tokens: try again in {wait} s",
                              **{"Retry-After": str(wait)})
            if verdict is Verdict.WRONG:
                return _error(403, "token not accepted")
            if not self._sampling_on:
                return _error(404, "sampling is off in this sidecar (sample_dir is empty)")
            store = self._store()
            if store is None:
                return _error(503, "the sample store is not open (starting, or it failed: "
                              "see the sidecar's log)", **{"Retry-After": "5"})
            try:
                return await handler(request, store)
            except (ValueError, UnicodeError, RecursionError) as error:
                # a malformed parameter this API did not foresee: the client's fault
                return _error(400, f"malformed request: {type(error).__name__}")

        return guarded

    @staticmethod
    async def _in_thread(function: Callable, *args):
        return await asyncio.get_running_loop().run_in_executor(None, partial(function, *args))

    async def list(self, request: web.Request, store: SampleStore) -> web.Response:
        try:
            query = SampleQuery.from_params(dict(request.query))
        except QueryError as error:
            return _error(400, str(error))
        page = await self._in_thread(store.query, query)
        return web.json_response({"samples": [s.to_json() for s in page.samples],
                                  "next_cursor": page.next_cursor})

    async def _sample(self, request: web.Request, store: SampleStore) -> Sample | web.Response:
        sample = await self._in_thread(store.get, request.match_info["id"])
        return sample if sample is not None else _error(404, "no such sample")

    async def show(self, request: web.Request, store: SampleStore) -> web.Response:
        sample = await self._sample(request, store)
        if isinstance(sample, web.Response):
            return sample
        return web.json_response(sample.to_json())

    async def image(self, request: web.Request, store: SampleStore) -> web.Response:
        # drawing and exporting need Pillow and numpy: loaded on the first such request,
        # never by a request-path process that serves none
        from lookout.sidecar.samples.export import box_layers
        from lookout.sidecar.samples.thumbnails import draw_boxes

        sample = await self._sample(request, store)
        if isinstance(sample, web.Response):
            return sample
        wanted = [b for b in request.query.get("boxes", "").split(",") if b]
        unknown = [b for b in wanted if b not in SOURCES]
        if unknown:
            return _error(400, f"boxes: expected a list of {', '.join(SOURCES)}")
        try:
            data = await self._in_thread(store.read, sample)
        except FileNotFoundError:
            return _error(404, "the sample's image was removed by retention")
        if wanted:
            data = await self._in_thread(draw_boxes, data, box_layers(sample, wanted),
                                         "webp" if sample.media_type == "image/webp" else "jpeg")
        return web.Response(body=data, content_type=sample.media_type)

    async def export(self, request: web.Request, store: SampleStore) -> web.StreamResponse:
        params = dict(request.query)
        export_format = params.pop("format", "coco")
        source = params.pop("source", "primary")
        most = params.pop("limit", str(EXPORT_MAX))
        if (not (most.isascii() and most.isdigit()) or len(most) > 9
                or not 1 <= int(most) <= EXPORT_MAX):
            return _error(400, f"limit: expected a whole number from 1 to {EXPORT_MAX}")
        try:
            query = SampleQuery.from_params(params)
        except QueryError as error:
            return _error(400, str(error))
        return await send_export(request, store, query, int(most), export_format, source)


async def send_export(request: web.Request, store: SampleStore, query: SampleQuery, most: int,
                      export_format: str, source: str) -> web.StreamResponse:
    """The samples `query` matches (up to `most`) as a zip: spooled to a temporary file in
    a thread, then streamed, so its length is known and the loop never waits on disk."""
    from lookout.sidecar.samples.export import ExportError, write_export

    with tempfile.TemporaryFile() as spool:
        try:
            count = await SampleApi._in_thread(
                lambda: write_export(store, store.iterate(query, most), spool,
                                     export_format, source))
        except ExportError as error:
            return _error(400, str(error))
        size = spool.seek(0, 2)
        spool.seek(0)
        response = web.StreamResponse(headers={
            "Content-Type": "application/zip",
            "Content-Disposition": f'attachment; filename="lookout-samples-'
                                   f'{export_format}.zip"',
            "X-Lookout-Samples": str(count)})
        response.content_length = size
        await response.prepare(request)
        while chunk := await SampleApi._in_thread(spool.read, CHUNK):
            await response.write(chunk)
        await response.write_eof()
        return response
