"""Runs the page with uvicorn: as `deid-node web`, or as the `web` child of `deid-node serve`."""

from __future__ import annotations

import threading

import structlog
import uvicorn

from node.factory import Node
from node.web.app import create_app
from node.web.auth import AdminToken

log = structlog.get_logger(__name__)


def serve_web(node: Node, stop: threading.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT (uvicorn's own handlers) or until `stop` is set."""
    web = node.settings.web
    app = create_app(node, AdminToken.from_file(web.admin_token_file))
    server = uvicorn.Server(uvicorn.Config(app, host=web.bind, port=web.port, log_config=None, access_log=False,
                                           server_header=False, proxy_headers=False))
    if stop is not None:
        def watch() -> None:
            stop.wait()
            server.should_exit = True

        threading.Thread(target=watch, name="web-stop", daemon=True).start()
    log.info("web_started", bind=web.bind, port=web.port, token_file=str(web.admin_token_file))
    server.run()
