"""The gateway in front of the Dagster UI and MLflow: no login, no entry; with it, requests, streamed bodies and
websockets pass through unchanged. Behind it here: a real `mlflow server` (its client logging through the gateway
with MLFLOW_TRACKING_USERNAME/PASSWORD) and a websocket echo server on loopback."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from aiohttp import ClientSession, web

from mdpo_pipeline.core.errors import ConfigError
from mdpo_pipeline.integrations.deploy_settings import DeploymentSettings
from mdpo_pipeline.integrations.gateway import Route, credentials, main
from tests.conftest import stop_process_group
from tests.pg import _free_port
from tests.test_deploy import _wait_http

LOGIN = {"MDPO_UI_USER": "ops", "MDPO_UI_PASSWORD": "open sesame"}


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _gateway(port: int, upstream: str, env: dict[str, str]) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "mdpo_pipeline.integrations.gateway", "--route",
                             f"127.0.0.1:{port}={upstream}"], env={**os.environ, **env}, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.1)
    raise AssertionError("the gateway did not listen")


def test_published_beyond_loopback_it_needs_a_password():
    with pytest.raises(ConfigError, match="MDPO_BIND_HOST=0.0.0.0 publishes .* set MDPO_UI_PASSWORD"):
        credentials({"MDPO_BIND_HOST": "0.0.0.0"})
    assert credentials({"MDPO_BIND_HOST": "0.0.0.0", **LOGIN}) == ("ops", "open sesame")
    assert credentials({"MDPO_UI_PASSWORD": "pw"}) == ("mdpo", "pw")
    assert credentials({}) is None, "loopback without a password: nothing to ask"
    assert main(["--route", "127.0.0.1:1=http://x:2"], {"MDPO_BIND_HOST": "10.0.0.5"}) == 2
    with pytest.raises(ConfigError, match="set MDPO_UI_PASSWORD"):
        DeploymentSettings.from_env({"MDPO_BIND_HOST": "10.0.0.5", "MDPO_UI_PASSWORD": ""})
    assert DeploymentSettings.from_env({"MDPO_BIND_HOST": "10.0.0.5", **LOGIN}).bind_host == "10.0.0.5"
    with pytest.raises(ConfigError, match="--route 'nowhere'"):
        Route.parse("nowhere")


@pytest.mark.slow
@pytest.mark.integration
def test_mlflow_behind_the_gateway_answers_only_with_the_login(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    port, gw = _free_port(), _free_port()
    with open(tmp_path / "server.log", "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{tmp_path}/db.sqlite", "--default-artifact-root",
             (tmp_path / "artifacts").as_uri()], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    gateway = None
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", server, timeout=120)
        gateway = _gateway(gw, f"http://127.0.0.1:{port}", LOGIN)
        url = f"http://127.0.0.1:{gw}/api/2.0/mlflow/experiments/search?max_results=5"
        for auth in (None, _basic("ops", "wrong"), _basic("mdpo", "open sesame"), "Bearer open sesame"):
            request = urllib.request.Request(url, headers={"Authorization": auth} if auth else {})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=10)
            assert refused.value.code == 401 and "Basic realm" in refused.value.headers["WWW-Authenticate"]
        # The pipeline's MLflow client, through the gateway with the login in its environment.
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ops")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "open sesame")
        client = MlflowClient(f"http://127.0.0.1:{gw}")
        run = client.create_run(client.create_experiment("through-the-gateway"))
        client.log_metric(run.info.run_id, "loss", 0.25, step=2)
        client.set_terminated(run.info.run_id)
        direct = MlflowClient(f"http://127.0.0.1:{port}")
        assert direct.get_metric_history(run.info.run_id, "loss")[0].value == 0.25
    finally:
        if gateway is not None:
            stop_process_group(gateway, signal.SIGTERM)
        stop_process_group(server, signal.SIGTERM)


def test_websockets_and_streamed_bodies_pass_through(tmp_path):
    """What the Dagster UI needs besides plain requests: its live run logs are a websocket."""
    upstream, gw = _free_port(), _free_port()

    async def scenario() -> None:
        async def echo(request: web.Request) -> web.StreamResponse:
            if request.headers.get("Upgrade", "").lower() == "websocket":
                ws = web.WebSocketResponse(protocols=("graphql-ws",))
                await ws.prepare(request)
                async for message in ws:
                    await ws.send_str(f"echo {message.data} via {request.headers['Host']}")
                return ws
            body = await request.read()
            return web.Response(body=body[::-1], headers={"X-Seen-Host": request.headers["Host"]})

        app = web.Application(client_max_size=8 << 20)
        app.router.add_route("*", "/{tail:.*}", echo)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", upstream).start()
        gateway = await asyncio.to_thread(_gateway, gw, f"http://127.0.0.1:{upstream}", LOGIN)
        try:
            login = {"Authorization": _basic("ops", "open sesame")}
            async with ClientSession() as session:
                big = bytes(range(256)) * 16384  # 4 MiB, streamed both ways
                async with session.post(f"http://127.0.0.1:{gw}/graphql?x=1", data=big, headers=login) as answer:
                    assert answer.status == 200 and await answer.read() == big[::-1]
                    assert answer.headers["X-Seen-Host"] == f"127.0.0.1:{upstream}"
                async with session.ws_connect(f"http://127.0.0.1:{gw}/graphql", headers=login,
                                              protocols=("graphql-ws",)) as ws:
                    assert ws.protocol == "graphql-ws"
                    await ws.send_str("run 1 log")
                    assert (await ws.receive()).data == f"echo run 1 log via 127.0.0.1:{upstream}"
                async with session.get(f"http://127.0.0.1:{gw}/graphql") as refused:
                    assert refused.status == 401
        finally:
            stop_process_group(gateway, signal.SIGTERM)
            await runner.cleanup()

    asyncio.run(scenario())
