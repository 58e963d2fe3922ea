"""The sample gallery on the admin port (`/ui/...`): the stored samples as pages for a
person, beside the JSON API for programs.

Access is the sample API's admin token, presented once on a login form (or by a
one-time link) and then carried by a signed, HttpOnly, SameSite=Strict cookie (Secure
when the request came over TLS) that expires, or ends when its user signs out. Wrong
tokens and codes count against the door's limits (`door.py`). With no token configured
the gallery is off and says why. Every response forbids script, remote assets and framing (CSP) and
sniffing (nosniff), and is not cached: the images are of user traffic.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from lookout.sidecar.samples.audit_marks import AuditMark, AuditMarkCache, marks_of
from lookout.sidecar.samples.audit_records import AuditRecords
from lookout.sidecar.samples.door import GALLERY, Door, Verdict
from lookout.sidecar.samples.query import EXPORT_MAX, QueryError, SampleQuery
from lookout.sidecar.samples.store import Sample, SampleStore
from lookout.sidecar.samples.ui_session import COOKIE, Sessions, gallery_path

CSP = ("default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
                    "Cache-Control": "no-store"}
STYLESHEET = Path(__file__).with_name("gallery.css")
PAGE_SIZE = 48
COMPARE_PAGE = 12
RECENT_FOR_FEATURES = 1000  # stored samples a sample's features are ranked among
UI_PARAMS = ("cursor", "limit")  # besides the filters: what a gallery URL may carry

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
StoreHandler = Callable[[web.Request, SampleStore], Awaitable[web.StreamResponse]]


def is_fleet(store: object) -> bool:
    """Whether a store is the fleet's bucket (fleet_store.py) rather than a local one."""
    from lookout.sidecar.samples.fleet_store import FleetStore

    return isinstance(store, FleetStore)


def trace_link(template: str, trace_id: str | None) -> str | None:
    return template.replace("{trace_id}", quote(trace_id, safe="")) \
        if template and trace_id else None


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _query(params: Mapping[str, str], limit: int) -> SampleQuery:
    given = {k: v for k, v in params.items() if v}
    given.setdefault("limit", str(limit))
    return SampleQuery.from_params(given)


def percentile_of(value: float, ordered: list[float]) -> float:
    """Where `value` stands among `ordered` values, 0-100 (ties halfway)."""
    below = bisect.bisect_left(ordered, value)
    equal = bisect.bisect_right(ordered, value) - below
    return 100.0 * (below + equal / 2) / len(ordered)


class FeatureReference:
    """What a sample's drift features are ranked against: the pinned drift baseline
    (`drift_baseline_path`) when there is one, else the store's most recent samples of
    the same model (a baseline learnt in the workers is not kept on disk)."""

    def __init__(self, baseline_path: str = "") -> None:
        self._path = baseline_path
        self._baseline: dict[str, list[float]] | None = None

    @staticmethod
    def _columns(rows: list[Mapping[str, Any]]) -> dict[str, list[float]]:
        columns: dict[str, list[float]] = {}
        for row in rows:
            for name, value in row.items():
                if isinstance(value, int | float) and not isinstance(value, bool) \
                        and value == value:  # NaN: missing
                    columns.setdefault(name, []).append(float(value))
        return {name: sorted(values) for name, values in columns.items()}

    def standing(self, store: SampleStore, sample: Sample) -> tuple[dict[str, float], str]:
        """Each feature's percentile, and what it is a percentile of."""
        if not sample.features:
            return {}, ""
        if self._path:
            if self._baseline is None:
                from lookout.shadow_eval.baseline import Baseline

                self._baseline = self._columns([dict(r) for r in Baseline.load(self._path).rows])
            columns, against = self._baseline, "of the drift baseline (drift_baseline_path)"
        else:
            recent = store.query(SampleQuery(model=sample.model, limit=RECENT_FOR_FEATURES))
            columns = self._columns([s.features for s in recent.samples if s.features])
            against = (f"among the {len(recent.samples)} most recent samples of this model "
                       f"(no drift_baseline_path is set)")
        return {name: percentile_of(float(value), columns[name])
                for name, value in sample.features.items()
                if name in columns and isinstance(value, int | float)
                and not isinstance(value, bool) and value == value}, against


class SampleUi:
    def __init__(self, door: Door, store: Callable[[], SampleStore | None], sampling_on: bool,
                 trace_url_template: str = "", baseline_path: str = "") -> None:
        self._door = door
        self.sessions = Sessions(door.token)
        self._store = store
        self._sampling_on = sampling_on
        self._trace_url = trace_url_template
        self._features = FeatureReference(baseline_path)
        # the marks of the store last shown (its opener may hand out another)
        self._marks: tuple[SampleStore, AuditMarkCache] | None = None

    def add_routes(self, app: web.Application) -> None:
        app.middlewares.append(self._security_headers)
        app.router.add_get("/ui", self._to_gallery)
        app.router.add_get("/ui/", self._to_gallery)
        app.router.add_get("/ui/static/gallery.css", self.stylesheet)
        app.router.add_get("/ui/login", self.login_form)
        app.router.add_post("/ui/login", self.login)
        app.router.add_get("/ui/login/link", self.login_by_link)
        app.router.add_post("/ui/logout", self.logout)
        app.router.add_get("/ui/samples", self._signed_in(self.gallery))
        app.router.add_get("/ui/samples/{id}", self._signed_in(self.sample))
        app.router.add_get("/ui/samples/{id}/thumbnail", self._signed_in(self.thumbnail, False))
        app.router.add_get("/ui/samples/{id}/original", self._signed_in(self.original, False))
        app.router.add_get("/ui/export", self._signed_in(self.export, False))
        app.router.add_get("/ui/compare", self._signed_in(self.compare))

    @web.middleware
    async def _security_headers(self, request: web.Request, handler: Handler
                                ) -> web.StreamResponse:
        ours = request.path == "/ui" or request.path.startswith("/ui/")
        try:
            response = await handler(request)
        except web.HTTPException as raised:  # redirects and 404s: headers all the same
            if ours:
                raised.headers.update(SECURITY_HEADERS)
            raise
        if ours:
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
        return response

    # -- access -------------------------------------------------------------------------

    def _off(self) -> web.Response | None:
        from lookout.sidecar.samples.ui_pages import message_page

        if not self.sessions.token:
            return _html(message_page(
                "The gallery is off", "No admin token is configured, and the gallery shows "
                "images of user traffic: set admin_token_file or LOOKOUT_ADMIN_TOKEN."), 404)
        if not self._sampling_on:
            return _html(message_page("The gallery is off", "Sampling is off in this "
                                      "sidecar (sample_dir is empty)."), 404)
        return None

    def _signed_in(self, handler: StoreHandler, page: bool = True) -> Handler:
        """The handler behind the session cookie. A page without one sends the browser
        to the login form (and back); an image or a download gets 401."""
        async def signed_in(request: web.Request) -> web.StreamResponse:
            from lookout.sidecar.samples.ui_pages import message_page

            refused = self._off()
            if refused is not None:
                return refused
            if not self.sessions.valid(request.cookies.get(COOKIE)):
                if page:
                    raise web.HTTPSeeOther(f"/ui/login?{urlencode({'next': request.path_qs})}")
                return web.Response(status=401, text="sign in at /ui/login first")
            store = self._store()
            if store is None:
                return _html(message_page("The sample store is not open", "It is starting, "
                                          "or it failed: see the sidecar's log.", signed_in=True),
                             503)
            try:
                return await handler(request, store)
            except QueryError as error:
                return _html(message_page("Not a filter this gallery knows", str(error),
                                          signed_in=True), 400)
            except Exception as error:
                if not is_fleet(store):
                    raise
                from lookout.sidecar.samples.bucket import explain

                # the fleet's bucket failing (down, denied): said, not a stack trace
                return _html(message_page("The fleet's sample store failed", explain(error),
                                          signed_in=True), 503)

        return signed_in

    def _session_response(self, request: web.Request, destination: str) -> web.Response:
        cookie, seconds = self.sessions.issue()
        response = web.HTTPSeeOther(destination)
        response.set_cookie(COOKIE, cookie, max_age=seconds, path="/ui", httponly=True,
                            samesite="Strict", secure=request.secure)
        return response

    async def login_form(self, request: web.Request) -> web.Response:
        from lookout.sidecar.samples.ui_pages import login_page

        refused = self._off()
        if refused is not None:
            return refused
        return _html(login_page(gallery_path(request.query.get("next", ""))))

    async def login(self, request: web.Request) -> web.Response:

        refused = self._off()
        if refused is not None:
            return refused
        form = await request.post()
        destination = gallery_path(str(form.get("next", "")))
        verdict = self._door.check(GALLERY, request.remote,
                                   lambda: self._door.matches(str(form.get("token", ""))))
        if verdict is not Verdict.ACCEPTED:
            return self._refused(request, destination, verdict, "token not accepted")
        raise self._session_response(request, destination)

    def _refused(self, request: web.Request, destination: str, verdict: Verdict,
                 wrong: str) -> web.Response:
        from lookout.sidecar.samples.ui_pages import login_page

        if verdict is Verdict.WRONG:
            return _html(login_page(destination, wrong), 403)
        wait = self._door.retry_after(request.remote) or 1
        response = _html(login_page(destination, f"too many wrong tokens: try again in "
                                                 f"{wait} s"), 429)
        response.headers["Retry-After"] = str(wait)
        return response

    async def login_by_link(self, request: web.Request) -> web.Response:

        refused = self._off()
        if refused is not None:
            return refused
        destination = gallery_path(request.query.get("next", ""))
        verdict = self._door.check(GALLERY, request.remote, lambda: self.sessions.redeem(
            request.query.get("code", "")))
        if verdict is not Verdict.ACCEPTED:
            return self._refused(request, destination, verdict, "this login link was used "
                                 "already or has expired: sign in with the token")
        raise self._session_response(request, destination)

    async def logout(self, request: web.Request) -> web.Response:
        self.sessions.end(request.cookies.get(COOKIE))
        response = web.HTTPSeeOther("/ui/login")
        response.del_cookie(COOKIE, path="/ui")
        raise response

    async def _to_gallery(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/ui/samples")

    async def stylesheet(self, request: web.Request) -> web.Response:
        return web.Response(body=STYLESHEET.read_bytes(), content_type="text/css",
                            charset="utf-8")

    # -- pages --------------------------------------------------------------------------

    @staticmethod
    async def _in_thread(function: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, partial(function, *args))

    def _audit_marks(self, store: SampleStore, ids: Sequence[str]) -> dict[str, AuditMark]:
        """The audited ones among `ids` (a blocking read: call it in a thread)."""
        if self._marks is None or self._marks[0] is not store:
            self._marks = (store, AuditMarkCache(AuditRecords(store).all))
        return marks_of(self._marks[1], ids)

    async def gallery(self, request: web.Request, store: SampleStore) -> web.Response:
        from lookout.sidecar.samples.ui_pages import gallery_page

        params = dict(request.query)
        query = _query(params, PAGE_SIZE)
        page = await self._in_thread(store.query, query)
        counts, missing = await self._in_thread(store.agreement_counts, query)
        marks = await self._in_thread(self._audit_marks, store,
                                      [sample.id for sample in page.samples])
        return _html(gallery_page(page, params, sum(counts) + missing, marks))

    async def _sample(self, request: web.Request, store: SampleStore) -> Sample:
        sample = await self._in_thread(store.get, request.match_info["id"])
        if sample is None:
            raise web.HTTPNotFound(text="no such sample")
        return sample

    async def sample(self, request: web.Request, store: SampleStore) -> web.Response:
        from lookout.sidecar.samples.ui_pages import sample_page

        sample = await self._sample(request, store)
        standing, against = await self._in_thread(self._features.standing, store, sample)
        marks = await self._in_thread(self._audit_marks, store, [sample.id])
        return _html(sample_page(sample, request.query.get("back", "/ui/samples"),
                                 trace_link(self._trace_url, sample.trace_id), standing,
                                 against, marks.get(sample.id)))

    async def thumbnail(self, request: web.Request, store: SampleStore) -> web.Response:
        return await self._file(request, store, original=False)

    async def original(self, request: web.Request, store: SampleStore) -> web.Response:
        return await self._file(request, store, original=True)

    async def _file(self, request: web.Request, store: SampleStore, original: bool
                    ) -> web.Response:
        sample = await self._sample(request, store)
        try:
            data = await self._in_thread(store.read, sample, original)
        except FileNotFoundError:
            raise web.HTTPNotFound(text="the image is not kept (or retention removed "
                                        "it)") from None
        if not original:
            return web.Response(body=data, content_type=sample.media_type)
        extension = (sample.original_file or "").rsplit(".", 1)[-1]
        return web.Response(body=data, content_type="application/octet-stream", headers={
            "Content-Disposition": f'attachment; filename="{sample.id}.{extension}"'})

    async def export(self, request: web.Request, store: SampleStore) -> web.StreamResponse:
        from lookout.sidecar.samples.api import send_export

        params = {k: v for k, v in request.query.items() if k not in UI_PARAMS}
        export_format = params.pop("format", "coco")
        source = params.pop("source", "primary")
        return await send_export(request, store, _query(params, 1000), EXPORT_MAX,
                                 export_format, source)

    async def compare(self, request: web.Request, store: SampleStore) -> web.Response:
        from lookout.sidecar.samples.ui_pages import compare_page

        params = dict(request.query)
        filters = {k: v for k, v in params.items()
                   if k not in ("baseline", "canary", "version", *UI_PARAMS)}
        base = _query(filters, COMPARE_PAGE)
        sides = []
        for role in ("baseline", "canary"):
            version = params.get(role, "")
            if not version:
                sides.append((role, "", None, [], 0))
                continue
            query = replace(base, version=version)
            page = await self._in_thread(store.query, query)
            counts, missing = await self._in_thread(store.agreement_counts, query)
            sides.append((role, version, page, counts, missing))
        return _html(compare_page(params, sides))
