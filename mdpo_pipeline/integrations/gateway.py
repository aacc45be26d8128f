"""The deployment's front door: one authenticating reverse proxy in front of the Dagster UI and the MLflow server.

Neither `dagster-webserver` nor `mlflow server` asks who is calling: anyone who reaches their ports can launch runs
or delete registered models. In compose (docker/compose.yaml) they publish no port; this gateway publishes both,
on MDPO_BIND_HOST, and answers only requests carrying the UI user's password (HTTP Basic, MDPO_UI_USER and
MDPO_UI_PASSWORD, read from the environment, never logged). It passes everything else through unchanged: requests
and responses streamed, websockets (the Dagster UI's live run logs) relayed both ways. Published beyond loopback it
refuses to start without a password; the services behind it talk to each other on compose's network, not through it.

    python -m mdpo_pipeline.integrations.gateway --route 0.0.0.0:3000=http://dagster-webserver:3000 \\
        --route 0.0.0.0:5000=http://mlflow:5000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hmac
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import ClientSession, ClientTimeout, WSMsgType, web

from mdpo_pipeline.core.errors import CLI_ERROR, ConfigError
from mdpo_pipeline.integrations.deploy_settings import UI_PASSWORD_ENV, DeploymentSettings, is_loopback

USER_ENV, BIND_ENV = DeploymentSettings.env_name("ui_user"), DeploymentSettings.env_name("bind_host")
DEFAULT_USER = DeploymentSettings.__dataclass_fields__["ui_user"].default
REALM = "mdpo-pipeline"
#: Headers of one hop (RFC 9110 §7.6.1), not forwarded; the caller's credentials stay at the gateway too.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "transfer-encoding", "upgrade", "authorization", "host"})
#: A failed login waits this long before its 401: guessing a password costs time.
FAILED_LOGIN_DELAY_S = 0.5


@dataclass(frozen=True)
class Route:
    """One published address and the service behind it."""

    host: str
    port: int
    upstream: str  # http://service:port

    @classmethod
    def parse(cls, text: str) -> Route:
        """``host:port=http://upstream:port``."""
        listen, sep, upstream = text.partition("=")
        host, _, port = listen.rpartition(":")
        parts = urlsplit(upstream)
        if not sep or not host or not port.isdigit() or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"--route {text[:120]!r}: write host:port=http://service:port")
        return cls(host, int(port), upstream.rstrip("/"))


def credentials(environ: Mapping[str, str] = os.environ) -> tuple[str, str] | None:
    """(user, password) from the environment; None when no password is set. Published beyond loopback (MDPO_BIND_HOST),
    a missing password is a ConfigError: the services behind the gateway have no login of their own."""
    password = environ.get(UI_PASSWORD_ENV) or None
    bind = environ.get(BIND_ENV) or "127.0.0.1"
    if password is None and not is_loopback(bind):
        raise ConfigError(f"{BIND_ENV}={bind[:80]} publishes the Dagster UI and MLflow beyond this machine: set "
                          f"{UI_PASSWORD_ENV} (and {USER_ENV}, default {DEFAULT_USER!r}) so that they ask for a login")
    return None if password is None else (environ.get(USER_ENV) or DEFAULT_USER, password)


def _authorized(header: str | None, expected: bytes) -> bool:
    if not header or not header.startswith("Basic "):
        return False
    try:
        given = base64.b64decode(header[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(given, expected)


def _forwarded_headers(request: web.Request, upstream: str) -> dict[str, str]:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    headers["Host"] = urlsplit(upstream).netloc
    headers["X-Forwarded-For"] = request.remote or ""
    headers["X-Forwarded-Host"] = request.host
    headers["X-Forwarded-Proto"] = request.scheme
    return headers


def make_app(upstream: str, login: tuple[str, str] | None) -> web.Application:
    """The proxy for one upstream, asking for ``login`` (user, password) unless None."""
    expected = None if login is None else f"{login[0]}:{login[1]}".encode()

    async def session_ctx(app: web.Application):
        # No total timeout: a run's log stream stays open as long as the run does.
        app["session"] = ClientSession(timeout=ClientTimeout(total=None, sock_connect=10), auto_decompress=False)
        yield
        await app["session"].close()

    async def handle(request: web.Request) -> web.StreamResponse:
        if expected is not None and not _authorized(request.headers.get("Authorization"), expected):
            await asyncio.sleep(FAILED_LOGIN_DELAY_S)
            return web.Response(status=401, text="login required\n",
                                headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'})
        session: ClientSession = request.app["session"]
        url = upstream + request.rel_url.raw_path_qs
        headers = _forwarded_headers(request, upstream)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await _websocket(request, session, url, headers)
        async with session.request(request.method, url, headers=headers, allow_redirects=False,
                                   data=request.content if request.body_exists else None) as answer:
            # A request keeps its Content-Length (WSGI servers such as MLflow's read no chunked body); the answer is
            # re-framed by this side, so its length header goes.
            response = web.StreamResponse(status=answer.status, reason=answer.reason, headers={
                k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP | {"content-length"}})
            await response.prepare(request)
            async for chunk in answer.content.iter_chunked(1 << 16):
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application(client_max_size=0)  # bodies are streamed through, not held
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def _websocket(request: web.Request, session: ClientSession, url: str, headers: dict[str, str]
                     ) -> web.WebSocketResponse:
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    headers = {k: v for k, v in headers.items() if not k.lower().startswith("sec-websocket")}
    async with session.ws_connect("ws" + url[4:], headers=headers, protocols=protocols) as upstream:
        client = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else ())
        await client.prepare(request)

        async def pump(source, sink) -> None:
            async for message in source:
                if message.type == WSMsgType.TEXT:
                    await sink.send_str(message.data)
                elif message.type == WSMsgType.BINARY:
                    await sink.send_bytes(message.data)
                else:
                    break
            await sink.close()

        await asyncio.gather(pump(client, upstream), pump(upstream, client), return_exceptions=True)
        return client


async def serve(routes: Sequence[Route], login: tuple[str, str] | None) -> None:
    """Serve every route until cancelled."""
    runners = []
    for route in routes:
        runner = web.AppRunner(make_app(route.upstream, login), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, route.host, route.port).start()
        runners.append(runner)
        print(f"gateway: {route.host}:{route.port} -> {route.upstream} "
              f"({'login required' if login else 'no login: loopback only'})", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        for runner in runners:
            await runner.cleanup()


def main(argv: list[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    """Start the gateway; a configuration error exits 2 with its message only."""
    parser = argparse.ArgumentParser(prog="python -m mdpo_pipeline.integrations.gateway", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--route", action="append", required=True,
                        help="host:port=http://service:port, once per published service")
    args = parser.parse_args(argv)
    try:
        routes = [Route.parse(r) for r in args.route]
        login = credentials(environ)
    except ConfigError as e:
        print(f"{CLI_ERROR}{e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(routes, login))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
