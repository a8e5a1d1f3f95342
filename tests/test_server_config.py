"""The server's settings in .streamlit/config.toml against DNS rebinding and cross-site use (issue 20).

A web page the user visits can point its own name at 127.0.0.1 and then talk to the local app as if it were
"same origin". Streamlit refuses such a page only when `server.allowedHosts` names the hosts the app is
really reached by: it checks the Host header of the WebSocket (every session, rerun and upload needs one)
and of its agent API. An empty list, Streamlit's default, accepts every Host.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import tomllib

import pytest

from training.paths import PROJECT_ROOT
from webapp import runtime
from webapp.harness import HOST, running_app

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
STREAM_PATH = "/_stcore/stream"  # the app's WebSocket
AGENT_SCHEMA_PATH = "/_stcore/agent/openapi.json"  # served even when the agent API is off, and says so
AGENT_INTERACT_PATH = "/_stcore/agent/interact"


def server_settings() -> dict:
    return tomllib.loads((PROJECT_ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))["server"]


def test_the_config_allows_only_loopback_hosts_keeps_xsrf_and_cors_protection_and_no_agent_api():
    server = server_settings()
    assert set(server["allowedHosts"]) == LOOPBACK_NAMES  # not empty: empty accepts every Host
    assert server["enableXsrfProtection"] is True
    assert server["enableCORS"] is True  # Streamlit's name is inverted: True *protects* (no "Allow-Origin: *")
    assert server["corsAllowedOrigins"] == []  # no other site's page is trusted
    assert server["enableAgentApi"] is False
    assert server["enableStaticServing"] is False


def test_every_server_setting_is_one_streamlit_knows():
    """A misspelt key (allowedHost) would be ignored, leaving Streamlit's permissive default in force."""
    from streamlit import config

    unknown = [name for name in server_settings() if f"server.{name}" not in config._config_options_template]
    assert not unknown, f"options Streamlit {config.__name__} does not know: {unknown}"


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:8501", True),
        ("localhost:8501", True),
        ("LOCALHOST", True),
        ("[::1]:8501", True),  # Streamlit compares the name without brackets: the config says ::1
        ("evil.example", False),
        ("evil.example:8501", False),
        ("127.0.0.1.evil.example", False),
        ("localhost.evil.example:8501", False),
        ("evil.example@127.0.0.1", False),
        (None, False),
    ],
)
def test_streamlits_host_check_reads_the_configured_list(host, allowed, monkeypatch):
    from streamlit.web.server.starlette import starlette_websocket

    hosts = server_settings()["allowedHosts"]
    real_get_option = starlette_websocket.config.get_option
    monkeypatch.setattr(
        starlette_websocket.config,
        "get_option",
        lambda name: hosts if name == "server.allowedHosts" else real_get_option(name),
    )
    assert starlette_websocket.is_host_allowed(host) is allowed


# ----------------------------------------------------------------------------- against a running app


def websocket_status(port: int, host: str, origin: str | None = None) -> int:
    """The status of a WebSocket handshake on the app's stream with this Host (and Origin): 101 is accepted."""
    lines = [
        f"GET {STREAM_PATH} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Protocol: streamlit",
        *([f"Origin: {origin}"] if origin else []),
    ]
    with socket.create_connection((HOST, port), timeout=10) as connection:
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status_line = connection.recv(4096).split(b"\r\n", 1)[0]  # b"HTTP/1.1 101 Switching Protocols"
    return int(status_line.split()[1])


def http_request(port: int, host: str, path: str, method: str = "GET", body: bytes = b"") -> tuple[int, bytes]:
    """One HTTP request to the app with this Host header; the status and body."""
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        connection.putrequest(method, path, skip_host=True)
        connection.putheader("Host", host)
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.slow
def test_a_rebound_host_is_refused_and_loopback_names_are_served(tmp_path):
    """`streamlit run app.py` as a user starts it: a WebSocket whose Host is another name is refused (403);
    the loopback names it is really reached by open one (101). Before: every Host got 101.
    The agent API is off (its schema says so) and its interact route refuses."""
    with running_app(env={runtime.MODEL_DIR_ENV: str(tmp_path / "no_adapter")}) as server:  # no model needed
        port = server.port
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
            assert websocket_status(port, host) == 101, host
        assert websocket_status(port, f"127.0.0.1:{port}", origin=f"http://127.0.0.1:{port}") == 101
        for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}"):
            assert websocket_status(port, host) == 403, host  # the rebinding page: its own name, our address
        # A page on another site, with the right Host (not rebinding, but a cross-site WebSocket): refused too.
        assert websocket_status(port, f"127.0.0.1:{port}", origin="http://evil.example") == 403
        # Plain HTTP too (webapp.runtime.AllowedHostsOnly): the page, the health check and the readiness check.
        for path in ("/", "/_stcore/health", "/api/ready"):
            assert http_request(port, f"evil.example:{port}", path)[0] == 421, path
            assert http_request(port, f"127.0.0.1:{port}", path)[0] in (200, 503), path

        status, schema = http_request(port, f"127.0.0.1:{port}", AGENT_SCHEMA_PATH)
        assert status == 200 and json.loads(schema)["info"]["x-streamlit-agent-api"] == "disabled"
        status, _ = http_request(port, f"127.0.0.1:{port}", AGENT_INTERACT_PATH, "POST", b"{}")
        assert status >= 400
