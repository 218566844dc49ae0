"""The README's shell lines work as written: every `gateway ...` line of its ```sh blocks runs,
in order, in a fresh data directory, and exits 0. Lines that need a running server, a config
file or a real relay are left to the tests of those parts (and named here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.support.serve import clean_env

README = Path(__file__).resolve().parents[2] / "README.md"
# Need `gateway serve`, a config file, a relay or a failed email first.
NOT_HERE = ("gateway serve", "--config", "channels test", "outbox retry", "domains ", "curl ")


def readme_commands() -> list[str]:
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            wanted = "gateway " in command and "pip install" not in command
            if wanted and not any(part in command for part in NOT_HERE):
                lines.append(command)
    return lines


def test_the_readme_commands_run_as_written(tmp_path):
    commands = readme_commands()
    assert any(c.startswith("gateway agents notify") for c in commands)
    assert any("participants add" in c for c in commands)
    env = clean_env(GATEWAY_DATA_DIR=str(tmp_path / "data"))
    for command in commands:
        proc = subprocess.run(
            ["bash", "-c", command.replace("gateway ", f"{sys.executable} -m gateway ", 1)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, f"{command}: {proc.stderr}"
