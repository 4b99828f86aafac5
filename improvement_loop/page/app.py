"""The fleet page's web app (Starlette, served by uvicorn): `/` the page, `/api/status` the same data as JSON,
`/episodes/<id>` an episode's viewer page.

Bound to 127.0.0.1 unless told otherwise; on any other address it refuses to start without a token, and then
every request must carry it (`Authorization: Bearer`, or `?token=` once, which sets an HttpOnly cookie and
redirects to the clean address), compared in constant time. An episode id from the address is checked by
`checked_episode_id` and must be in the catalog before it comes near the store.
"""
from __future__ import annotations

import argparse
import hmac
import ipaddress
import math
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from robot_runtime.datatools.viewer import episode_html
from robot_runtime.episode import EpisodeError, EpisodeStore, checked_episode_id
from robot_runtime.improvement_loop.page.render import page
from robot_runtime.improvement_loop.page.status import PageError, connect_readonly, fleet_status

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 5871
TOKEN_ENV, COOKIE = "ROBOT_RUNTIME_PAGE_TOKEN", "fleet_page_token"
MIN_TOKEN = 16


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def check_binding(host: str, token: str | None) -> None:
    """Refuse a page reachable from other machines without a token, or with a guessable one."""
    if token is not None and len(token) < MIN_TOKEN:
        raise PageError(f"page token: {len(token)} characters; use at least {MIN_TOKEN} (e.g. `openssl rand -hex 16`)")
    if token is None and not is_loopback(host):
        raise PageError(f"page bound to {host} (reachable from other machines) needs a token: set {TOKEN_ENV} or "
                        "--token-file, or bind to 127.0.0.1 and reach it through an SSH tunnel")


class TokenGate:
    """ASGI middleware: 401 for any request without the token."""

    def __init__(self, app, token: str):
        self.app, self.token = app, token.encode()

    def _matches(self, offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(offered.encode(), self.token)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        header = request.headers.get("authorization", "")
        if self._matches(header[7:] if header.lower().startswith("bearer ") else None) or self._matches(
                request.cookies.get(COOKIE)):
            return await self.app(scope, receive, send)
        if self._matches(request.query_params.get("token")):
            clean = request.url.remove_query_params("token")
            response: Response = RedirectResponse(clean.path + (f"?{clean.query}" if clean.query else ""), 303)
            response.set_cookie(COOKIE, self.token.decode(), httponly=True, samesite="strict")
        else:
            response = PlainTextResponse("401: this fleet page needs its token (Authorization: Bearer TOKEN, or "
                                         "?token=TOKEN once)", 401, headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


def finite(value):
    """`value` with NaN and infinities as null: JSON has no such numbers (a failed parity check can record one)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def make_app(catalog: str | Path, store: str | Path | None = None, token: str | None = None,
             online_window_s: float = 300.0, days: int = 14) -> Starlette:
    """The page for the catalog database `catalog`; episodes from `store` (default: the catalog's directory,
    where robot-runtime-ingest keeps both)."""
    catalog = Path(catalog)

    def status() -> dict:
        conn = connect_readonly(catalog)
        try:
            return fleet_status(conn, time.time(), online_window_s, days)
        finally:
            conn.close()

    def unavailable(err: Exception) -> PlainTextResponse:
        return PlainTextResponse(f"503: catalog {catalog} cannot be read: {err}", 503)

    def index(request: Request) -> Response:
        try:
            return HTMLResponse(page(status()))
        except (PageError, sqlite3.Error) as err:
            return unavailable(err)

    def api_status(request: Request) -> Response:
        try:
            return JSONResponse(finite(status()))
        except (PageError, sqlite3.Error) as err:
            return unavailable(err)

    def episode(request: Request) -> Response:
        try:
            episode_id = checked_episode_id(request.path_params["episode_id"])
        except EpisodeError as err:
            return PlainTextResponse(f"400: {err}", 400)
        try:
            conn = connect_readonly(catalog)
            try:
                known = conn.execute("SELECT 1 FROM episodes WHERE episode_id = ?", (episode_id,)).fetchone()
            finally:
                conn.close()
        except (PageError, sqlite3.Error) as err:
            return unavailable(err)
        if not known:
            return PlainTextResponse(f"404: episode {episode_id} is not in the catalog", 404)
        try:
            return HTMLResponse(episode_html(EpisodeStore(store or catalog.parent, create=False).open(episode_id)))
        except EpisodeError as err:
            return PlainTextResponse(f"404: episode {episode_id} is cataloged but cannot be read from the store "
                                     f"({err}); the ingest server's repair at start-up reconciles them", 404)

    app = Starlette(routes=[Route("/", index), Route("/api/status", api_status),
                            Route("/episodes/{episode_id}", episode)])
    if token is not None:
        app.add_middleware(TokenGate, token=token)
    return app


def _config(catalog, host: str, port: int, token: str | None, **options) -> uvicorn.Config:
    check_binding(host, token)
    connect_readonly(catalog).close()  # a wrong path fails here, not at the first request
    return uvicorn.Config(make_app(catalog, token=token, **options), host=host, port=port, log_level="warning",
                          access_log=False, lifespan="off")


def serve(catalog: str | Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token: str | None = None,
          **options) -> None:
    """Serve the page until the process ends (the daemon's `run` calls this in a thread)."""
    uvicorn.Server(_config(catalog, host, port, token, **options)).run()


class PageServer:
    """The page in a background thread, with the address it got (port 0: any free one) and a clean stop."""

    def __init__(self, catalog: str | Path, host: str = DEFAULT_HOST, port: int = 0, token: str | None = None,
                 **options):
        self.server = uvicorn.Server(_config(catalog, host, port, token, **options))
        self.thread = threading.Thread(target=self.server.run, name="fleet-page", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise PageError(f"fleet page did not start on {host}:{port} (in use?)")
            time.sleep(0.02)
        self.host, self.port = host, self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{host}:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def read_token(token_file: str) -> str | None:
    """The token from --token-file or the environment; never from the command line (ps shows it)."""
    if token_file:
        try:
            return Path(token_file).read_text().strip()
        except OSError as err:
            raise PageError(f"--token-file {token_file}: {err.strerror}") from None
    return os.environ.get(TOKEN_ENV) or None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="robot-runtime-page", description="Serve the fleet page.")
    parser.add_argument("--catalog", required=True, help="the fleet's catalog database (STORE/catalog.sqlite)")
    parser.add_argument("--store", default="", help="the fleet's episode store (default: the catalog's directory)")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"(default {DEFAULT_PORT})")
    parser.add_argument("--token-file", default="", help=f"file holding the access token (or set {TOKEN_ENV}); "
                                                         "required when --host is not a loopback address")
    parser.add_argument("--online-window-s", type=float, default=300.0, help="a robot is online if it polled "
                                                                             "within this many seconds")
    parser.add_argument("--days", type=int, default=14, help="days shown in the plots")
    args = parser.parse_args(argv)
    try:
        serve(args.catalog, args.host, args.port, read_token(args.token_file), store=args.store or None,
              online_window_s=args.online_window_s, days=args.days)
    except (PageError, EpisodeError) as err:
        sys.exit(f"robot-runtime-page: {err}")
