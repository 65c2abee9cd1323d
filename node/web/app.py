"""The administrator's page: status, quarantine review with pictures, dry run, /metrics.

Server-rendered (Starlette + Jinja2), no script and no external resource: the node's machine
has no internet, and the Content-Security-Policy forbids both. Pages, URLs and metrics carry job
ids, pseudonyms, hashes and PHI-free reasons only: the quarantine review shows what a dry run
would forward, never an original value.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Awaitable, Callable
import pydicom
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from node import admin
from node.deid.pipeline import DeidentificationError, read_instance
from node.queue.sealing import SealBroken
from node.factory import Node
from node.config import ConfigError
from node.metrics import NodeMetrics
from node.persist.models import JobState
from node.preview import DryRun, dry_run
from node.web.auth import PUBLIC_PATHS, SESSION_COOKIE, AdminToken
from node.web.render import ENVIRONMENT, inline_png, per_minute_chart
from node.web.status import read_status

REVIEW_FRAMES = 8  # frames shown per instance (spread over a cine loop)
MAX_UPLOAD_BYTES = 256 * 1024 * 1024
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


class Window:
    """The web process's view of one node: stores, de-identifier and admin token."""

    def __init__(self, node: Node, token: AdminToken) -> None:
        self.node = node
        self.token = token
        self.templates = Jinja2Templates(env=ENVIRONMENT)
        self._dry_run_lock = threading.Lock()  # the pixel cleaner keeps per-process state
        self.metrics_reader = NodeMetrics(node.sessions, node.settings)
        # the first reading goes through the whole audit trail: do it now, not in a scrape
        threading.Thread(target=self.metrics_reader.text, name="metrics-warm-up", daemon=True).start()

    @property
    def route_names(self) -> list[str]:
        return [route.name for route in self.node.settings.routes]

    def dry_run(self, ds: pydicom.Dataset, route_name: str | None) -> DryRun:
        """What `route_name` (the first route when None or unknown: a job set aside before it was
        routed) would forward: its profile and pixel policy, its project's keyed derivation."""
        try:
            route = self.node.settings.route(route_name) if route_name else self.node.settings.routes[0]
        except ConfigError:
            route = self.node.settings.routes[0]
        with self._dry_run_lock:
            return dry_run(self.node.deidentifier(route), self.node.derivation.for_project(route.project), ds,
                           frame_limit=REVIEW_FRAMES)

    def page(self, request: Request, template: str, status_code: int = 200, **context: object) -> Response:
        context.setdefault("refresh", None)
        context.update(csrf=self.token.csrf, node_name=self.node.settings.node_name, inline_png=inline_png)
        return self.templates.TemplateResponse(request, template, context, status_code=status_code)

    async def authenticate(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.url.path in PUBLIC_PATHS or self.token.by_bearer(request) or self.token.by_cookie(request):
            response = await call_next(request)
        elif request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            response = RedirectResponse("/login", status_code=303)
        else:
            response = Response("admin token required\n", status_code=401, media_type="text/plain",
                                headers={"WWW-Authenticate": 'Bearer realm="deid-node"'})
        response.headers.update(_SECURITY_HEADERS)
        return response

    # --- pages -------------------------------------------------------------------------------

    def login_form(self, request: Request) -> Response:
        return self.page(request, "login.html", error=None)

    async def login(self, request: Request) -> Response:
        form = await request.form()
        if not self.token.matches(str(form.get("token", "")).strip()):
            return self.page(request, "login.html", status_code=401, error="That is not the admin token.")
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(SESSION_COOKIE, self.token.session_value, httponly=True, samesite="strict", path="/")
        return response

    async def logout(self, request: Request) -> Response:
        if not await self._csrf_ok(request):
            return _forbidden()
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    def status(self, request: Request) -> Response:
        view = read_status(self.node)
        return self.page(request, "status.html", view=view, chart=per_minute_chart(view.per_minute),
                         refresh=self.node.settings.web.refresh_seconds)

    def metrics(self, _request: Request) -> Response:
        return Response(self.metrics_reader.text(), media_type=CONTENT_TYPE_LATEST)

    def review(self, request: Request) -> Response:
        job = self.node.jobs.get(int(request.path_params["job_id"]))
        if job is None or job.state != JobState.QUARANTINED or job.node != self.node.settings.node_name:
            return self.page(request, "missing.html", status_code=404)
        try:
            run = self.dry_run(read_instance(self.node.spool.open_original(job.spool_file, area="quarantine")),
                               job.route)
        except (DeidentificationError, SealBroken) as exc:
            run = DryRun(error=str(exc))
        except OSError as exc:  # the spool copy is gone or unreadable: the page still lets one decide
            run = DryRun(error=f"the quarantined copy cannot be read ({type(exc).__name__})")
        refused_by = self.node.jobs.quarantined_destinations([job.id])[job.id]
        return self.page(request, "review.html", job=job, run=run, refused_by=refused_by)

    async def release(self, request: Request) -> Response:
        if not await self._csrf_ok(request):
            return _forbidden()
        admin.release(self.node, [int(request.path_params["job_id"])])
        return RedirectResponse("/", status_code=303)

    async def purge(self, request: Request) -> Response:
        form = await request.form()
        if not self.token.csrf_ok(request, _text(form.get("csrf"))):
            return _forbidden()
        job_id = int(request.path_params["job_id"])
        if form.get("confirm") != "purge":
            return RedirectResponse(f"/quarantine/{job_id}", status_code=303)
        admin.purge(self.node, [job_id])
        return RedirectResponse("/", status_code=303)

    async def retry_waiting(self, request: Request) -> Response:
        form = await request.form()
        if not self.token.csrf_ok(request, _text(form.get("csrf"))):
            return _forbidden()
        admin.retry_waiting(self.node, _text(form.get("destination")) or None)
        return RedirectResponse("/", status_code=303)

    def preview_form(self, request: Request) -> Response:
        return self.page(request, "preview.html", run=None, routes=self.route_names)

    async def preview(self, request: Request) -> Response:
        if int(request.headers.get("content-length", "0")) > MAX_UPLOAD_BYTES:
            return Response("file too large\n", status_code=413, media_type="text/plain")
        form = await request.form(max_files=1)
        if not self.token.csrf_ok(request, _text(form.get("csrf"))):
            return _forbidden()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            return self.page(request, "preview.html", status_code=400, run=DryRun(error="no file sent"),
                             routes=self.route_names)
        data = await upload.read()
        try:
            ds = pydicom.dcmread(io.BytesIO(data))
        except Exception as exc:  # noqa: BLE001 - whatever a damaged upload makes pydicom raise
            run = DryRun(error=f"unreadable DICOM file ({type(exc).__name__})")
        else:
            run = self.dry_run(ds, _text(form.get("route")))
        return self.page(request, "preview.html", run=run, routes=self.route_names)

    async def _csrf_ok(self, request: Request) -> bool:
        form = await request.form()
        return self.token.csrf_ok(request, _text(form.get("csrf")))


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _forbidden() -> Response:
    return Response("missing or wrong CSRF token\n", status_code=403, media_type="text/plain")


def create_app(node: Node, token: AdminToken) -> Starlette:
    window = Window(node, token)
    routes = [
        Route("/login", window.login_form, methods=["GET"]),
        Route("/login", window.login, methods=["POST"]),
        Route("/logout", window.logout, methods=["POST"]),
        Route("/", window.status, methods=["GET"]),
        Route("/metrics", window.metrics, methods=["GET"]),
        Route("/quarantine/{job_id:int}", window.review, methods=["GET"]),
        Route("/quarantine/{job_id:int}/release", window.release, methods=["POST"]),
        Route("/quarantine/{job_id:int}/purge", window.purge, methods=["POST"]),
        Route("/deliveries/retry", window.retry_waiting, methods=["POST"]),
        Route("/preview", window.preview_form, methods=["GET"]),
        Route("/preview", window.preview, methods=["POST"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(BaseHTTPMiddleware, dispatch=window.authenticate)])
