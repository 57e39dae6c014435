"""The ``lambda`` group loads what a command needs when it runs, not when Celery loads the plugin
(which it does for every ``celery`` command, ``celery worker`` included)."""

from __future__ import annotations

import subprocess
import sys

import click
from click.testing import CliRunner

from devtools.cli import ELSEWHERE, lambda_

HEAVY = ("devtools.bench", "devtools.checks", "devtools.ops", "devtools.soak", "rich")


def test_loading_the_plugin_imports_no_command_module() -> None:
    code = (
        "import sys; import devtools.cli; "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('devtools') or "
        "m.split('.')[0] == 'rich')))"
    )

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    loaded = out.stdout.split()
    assert "devtools.cli" in loaded
    assert [m for m in loaded if m.startswith(HEAVY)] == []


def test_every_command_declared_elsewhere_is_found_under_its_name() -> None:
    context = click.Context(lambda_)

    for name in ELSEWHERE:
        command = lambda_.get_command(context, name)
        assert command is not None and command.name == name


def test_help_lists_the_commands_here_and_elsewhere() -> None:
    result = CliRunner().invoke(lambda_, ["--help"])

    assert result.exit_code == 0, result.output
    listed = [line.split()[0] for line in result.output.split("Commands:")[1].splitlines() if line]
    assert listed == sorted(listed)
    assert set(listed) >= {*ELSEWHERE, "consume", "deploy-local", "up", "demo", "doctor", "revoke"}
