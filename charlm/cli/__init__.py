"""The `charlm` command line. Each command parses its options, calls one library
function and maps user errors to one line and exit code 2 (app.py)."""

from charlm.cli import commands, compare, data, inspect, sample, serve  # noqa: F401  (they register commands)
from charlm.cli.app import app


def main():
    app(prog_name="charlm")
