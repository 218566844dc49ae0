"""The gateway config of the outbound crash tests: one app, SMTP out to a loopback relay."""

from __future__ import annotations

from pathlib import Path

from tests.support.smtp_sink import free_port


def write_relay_config(tmp_path: Path, relay_port: int) -> Path:
    """Write `gateway.toml` for `gateway serve` sending at once through the relay."""
    config_file = tmp_path / "gateway.toml"
    config_file.write_text(
        f"""
data_dir = "{tmp_path / "data"}"
sweep_seconds = 0.3
[smtp]
listen = "127.0.0.1:{free_port()}"
[http]
listen = "127.0.0.1:0"
[delivery]
email_grace_seconds = 0
widget_online_seconds = 0
[outbound]
transport = "smtp"
host = "127.0.0.1"
port = {relay_port}
timeout_seconds = 60
[[apps]]
name = "demo"
brand = "Demo"
[[apps.channels]]
name = "support"
addresses = ["support@localhost"]
"""
    )
    return config_file
