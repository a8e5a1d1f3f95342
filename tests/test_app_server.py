"""webapp/harness.py, the one helper that starts `streamlit run app.py` for the browser tests, the
benchmark and the load test: a free port, the server's environment, waiting for health, a clean stop."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from webapp.harness import HOST, app_command, free_port, running_app, server_environment


def test_free_port_can_be_bound():
    port = free_port()
    with socket.socket() as listener:
        listener.bind((HOST, port))


def test_server_environment_is_offline_and_applies_overrides(monkeypatch):
    monkeypatch.setenv("SENTIMENT_MODEL_DIR", "somewhere")
    monkeypatch.setenv("KEPT", "yes")
    environment = server_environment({"SENTIMENT_MODEL_DIR": None, "OMP_NUM_THREADS": "1"})
    assert (
        environment["HF_HUB_OFFLINE"] == "1" and environment["OMP_NUM_THREADS"] == "1" and environment["KEPT"] == "yes"
    )
    assert "SENTIMENT_MODEL_DIR" not in environment
    assert server_environment({"HF_HUB_OFFLINE": "0"})["HF_HUB_OFFLINE"] == "0"  # the caller has the last word


def test_app_command_runs_app_py_headless_on_loopback_with_extra_options():
    command = app_command(8765, args=["--server.disconnectedSessionTTL", "5"])
    assert command[1:5] == ["-m", "streamlit", "run", "app.py"]
    options = dict(zip(command[5::2], command[6::2]))
    assert options == {
        "--server.headless": "true",
        "--server.port": "8765",
        "--server.address": HOST,
        "--browser.gatherUsageStats": "false",
        "--server.disconnectedSessionTTL": "5",
    }


def test_running_app_is_healthy_inside_and_stopped_after(tmp_path):
    log = tmp_path / "streamlit.log"
    with running_app(env={"SENTIMENT_MODEL_DIR": str(tmp_path / "no_adapter")}, log=log) as server:
        assert server.health()[0] and server.elapsed_s() > 0
        with urllib.request.urlopen(server.url, timeout=10) as page:  # the page itself, not only the health check
            assert page.status == 200
    assert server.process.returncode is not None  # stopped on leaving
    assert not server.health(timeout=1)[0]
    assert log.exists()  # a log the caller named is kept for diagnosis


def test_a_server_that_exits_at_start_is_reported_with_its_log():
    with pytest.raises(RuntimeError, match=r"streamlit exited with code \d+ before it was healthy(.|\n)*no_such"):
        with running_app(args=["--no_such.option", "1"], startup_timeout_s=60):
            pass
