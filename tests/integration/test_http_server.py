"""The HTTP server inside `gateway serve`: it listens, answers, and stops cleanly."""

from __future__ import annotations

import smtplib
import socket
import time
from email.message import EmailMessage

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import ConfigError
from gateway.server import start
from tests.support.http import free_port, loopback_config
from tests.support.serve import clean_env, serve_process, stop_cleanly


def test_healthz_and_openapi(http_api):
    with http_api.client() as client:
        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "database": "ok"}
        spec = client.get("/openapi.json").json()
    assert "/healthz" in spec["paths"]


def test_serve_runs_http_and_stops(tmp_path):
    services = start(loopback_config(tmp_path), "ingress")
    try:
        (line,) = [x for x in services.listening if x.startswith("http: ")]
        url = line.removeprefix("http: ")
        assert httpx.get(f"{url}/healthz").status_code == 200
    finally:
        services.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz")


def test_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = loopback_config(tmp_path)
        config = config.model_copy(
            update={"http": config.http.model_copy(update={"listen": f"127.0.0.1:{port}"})}
        )
        with pytest.raises(ConfigError, match=f"http.listen: cannot listen on 127.0.0.1:{port}"):
            start(config, "ingress")


def test_serve_prints_http_and_stops_on_sigterm(tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'database_url = "sqlite:///{tmp_path / "gw.db"}"\ndata_dir = "{tmp_path}"\n'
        f'[smtp]\nlisten = "127.0.0.1:{free_port()}"\n[http]\nlisten = "127.0.0.1:0"\n'
        '[[apps]]\nname = "demo"\nbrand = "Demo"\n'
    )
    with serve_process(
        ["--config", str(config), "serve", "--role", "ingress"], cwd=tmp_path, env=clean_env()
    ) as proc:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        (http_line,) = [x for x in lines if "http: " in x]
        url = http_line.split("http: ")[1].strip()
        assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
        stop_cleanly(proc)


def _metrics(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics").text
    return {
        sample.name + "".join(f"{{{k}={v}}}" for k, v in sample.labels.items()): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_what_came_in_and_how_long_it_took(tmp_path):
    config = loopback_config(tmp_path)
    services = start(config, "all")
    try:
        (line,) = [x for x in services.listening if x.startswith("http: ")]
        url = line.removeprefix("http: ")
        before = _metrics(url)
        assert before["gateway_inbound_accepted_total"] == 0
        assert before["gateway_inbound_processing_seconds_count"] == 0
        host, _, port = config.smtp.listen.rpartition(":")
        with smtplib.SMTP(host, int(port)) as smtp:
            for i in range(3):
                msg = EmailMessage()
                msg["From"] = f"c{i}@example.com"
                msg["To"] = "support@localhost"
                msg["Subject"] = f"Question {i}"
                msg.set_content("Hello")
                smtp.send_message(msg)
        deadline = time.monotonic() + 30
        while _metrics(url)["gateway_inbound_processed_total"] < 3:
            assert time.monotonic() < deadline, _metrics(url)
            time.sleep(0.2)
        after = _metrics(url)
    finally:
        services.stop()
    assert after["gateway_inbound_accepted_total"] == 3
    assert after["gateway_inbound_quarantined_total"] == 0
    assert after["gateway_conversations_open"] == 3
    assert after["gateway_inbound_processing_seconds_count"] == 3
    assert 0 <= after["gateway_inbound_processing_seconds{quantile=0.5}"] < 30
    assert after["gateway_outbox_messages{state=sent}"] == 0
    assert "gateway_timers_due" in after
