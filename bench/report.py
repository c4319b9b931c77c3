"""What every benchmark report says about where it ran: the machine, its load, the code."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def load_average() -> str:
    """The 1/5/15-minute load averages: other work on the machine skews every figure."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> tuple[str, str]:
    """The CPU model and the memory in GiB, from /proc ("unknown CPU", "?" elsewhere)."""
    cpu, mem = "unknown CPU", "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    return cpu, mem


def code_version(paths: Sequence[str], changed_note: str = "uncommitted changes") -> str:
    """The commit measured, and whether ``paths`` (relative to the repository) differ
    from it."""
    git = ["git", "-C", str(REPO)]
    try:
        commit = subprocess.run(
            [*git, "log", "-1", "--format=%h %s"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            [*git, "status", "--porcelain", "--", *paths],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return commit + (f" + {changed_note}" if changed else "")
