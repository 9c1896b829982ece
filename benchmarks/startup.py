"""`make bench-startup`: how long the commands that need no model take to answer.

Help, `data` and config errors never import TensorFlow; this times them as a user's
shell does (a new process each), next to bare Python and `import tensorflow` for scale,
and prints the median of several runs of each. Target: `charlm --help` under 1 s.

    python benchmarks/startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHARLM = [sys.executable, "-m", "charlm.cli"]
COMMANDS = {
    "python -c pass (for scale)": [sys.executable, "-c", "pass"],
    "charlm --help": CHARLM + ["--help"],
    "charlm train --help": CHARLM + ["train", "--help"],
    "charlm sample --help": CHARLM + ["sample", "--help"],
    "charlm data stats README.md": CHARLM + ["data", "stats", "README.md"],
    "charlm train with a config error": CHARLM + ["train", "--set", "model.cell=nope"],
    "python -c 'import tensorflow' (for scale)": [sys.executable, "-c", "import tensorflow"],
}
TARGET_S = 1.0


def median_wall_time(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=Path(__file__).resolve().parent.parent,
        )
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"median wall time of {args.runs} runs, each a new process:")
    results = {name: median_wall_time(command, args.runs) for name, command in COMMANDS.items()}
    for name, seconds in results.items():
        print(f"  {seconds:6.2f} s  {name}")
    help_s = results["charlm --help"]
    verdict = "meets" if help_s < TARGET_S else "misses"
    print(
        f"charlm --help: {help_s:.2f} s, {verdict} the {TARGET_S:.0f} s target "
        f"({results[next(iter(COMMANDS))]:.2f} s of it is Python's own start)"
    )


if __name__ == "__main__":
    main()
