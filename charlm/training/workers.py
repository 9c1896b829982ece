"""`charlm train --workers N`: N local worker processes on 127.0.0.1, each given a
TF_CONFIG naming all of them, to try multi-worker training on one machine."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def launch_local_workers(count: int, arguments: list[str]) -> int:
    """Run `charlm train ARGUMENTS` as `count` workers on 127.0.0.1; the chief's output
    is shown, the others' is kept quiet unless they fail. Returns the worst exit code."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(count)]
    processes, logs = [], []
    for index in range(count):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CONFIG=json.dumps(config))
        log = tempfile.TemporaryFile() if index else None  # the chief speaks for all
        logs.append(log)
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "charlm.cli",
                    "train",
                    *arguments,
                    "--set",
                    "train.distribute=multi_worker",
                ],
                env=env,
                stdout=log or None,
                stderr=log or None,
            )
        )
    try:
        codes = [p.wait() for p in processes]
    except KeyboardInterrupt:  # Ctrl-C reaches every worker of the process group itself
        codes = [p.wait() for p in processes]
    for index, code in enumerate(codes):
        if code and logs[index]:
            logs[index].seek(0)
            sys.stderr.write(
                f"worker {index} exited with {code}:\n"
                + logs[index].read().decode(errors="replace")[-2000:]
            )
    return max(codes, key=abs)
