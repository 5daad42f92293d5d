"""`graphgen list | head`: a reader that leaves early ends the command quietly (found walking through the README)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


@pytest.mark.parametrize("arguments", [["list"], ["list", "--json"], ["stats", "alexnet"]])
def test_a_closed_pipe_ends_the_command_quietly(arguments):
    """`graphgen list | head`: the reader leaving early is no bug, so no traceback."""
    command = [sys.executable, "-c", "import sys; from graphgen.cli import main; sys.exit(main())", *arguments]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    process.stdout.close()  # before the command has written anything: its first write meets a closed pipe
    _, stderr = process.communicate(timeout=120)
    assert b"Traceback" not in stderr and b"BrokenPipe" not in stderr, stderr.decode()
    assert process.returncode == 1
