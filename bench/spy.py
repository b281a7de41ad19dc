"""py-spy around a bench phase: record a process tree, then say where its samples went.

`.venv/bin/pip install py-spy` (it is not a dependency of the project). The raw (collapsed)
stacks are kept next to the results so a flame graph can be drawn from them later
(e.g. `py-spy` speedscope output, or flamegraph.pl on the raw file).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

_LINE = re.compile(r":\d+\)$")


def record(pid: int, seconds: int, out: Path, *, idle: bool = False,
           gil: bool = False) -> subprocess.Popen[bytes]:
    """Start sampling `pid` and its children for `seconds`; raw collapsed stacks go to `out`.

    `gil`: only the thread holding the GIL, i.e. where the CPU goes; otherwise a thread
    waiting to take the GIL back (after I/O) is sampled where it waits, as if it ran.
    """
    binary = shutil.which("py-spy") or str(Path(__file__).resolve().parents[1] / ".venv/bin/py-spy")
    argv = [
        binary,
        "record",
        "--pid",
        str(pid),
        "--subprocesses",
        "--rate",
        "200",
        "--duration",
        str(seconds),
        "--format",
        "raw",
        "--nonblocking",
        "--output",
        str(out),
    ]
    if idle:
        argv.append("--idle")
    if gil:
        argv.append("--gil")
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarize(raw: Path, top: int = 30) -> dict[str, list[tuple[str, float]]]:
    """Inclusive and self share of samples per function (line numbers folded together)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_LINE.sub(")", f) for f in stack.split(";") if not f.startswith("process ")]
        for frame in set(frames):
            inclusive[frame] += n
        if frames:
            own[frames[-1]] += n
    if not total:
        return {"inclusive": [], "self": []}
    return {
        "inclusive": [(f, round(100 * n / total, 1)) for f, n in inclusive.most_common(top)],
        "self": [(f, round(100 * n / total, 1)) for f, n in own.most_common(top)],
    }


def by_package(raw: Path) -> list[tuple[str, float]]:
    """Self samples grouped by the library (or our package) whose code was running."""
    groups: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        groups[_package(stack.split(";")[-1])] += int(count)
    return [(g, round(100 * n / total, 1)) for g, n in groups.most_common()] if total else []


def _package(frame: str) -> str:
    """The library of a frame's file, or our package as app.<subpackage>. py-spy names a file
    relative to the sys.path entry it was found on (sqlalchemy/engine/base.py, socket.py),
    in full only outside sys.path."""
    found = re.search(r"\((.*):\d+\)$", frame)
    path = found[1] if found else frame
    path = path.split("site-packages/", 1)[-1]
    if "/work/" in path and "/app/" in path:
        path = "app/" + path.split("/app/", 1)[1]
    if path.startswith("app/"):
        return "app." + path.split("/")[1].removesuffix(".py")
    if "python3" in path:
        return "stdlib:" + path.rsplit("/", 1)[-1].removesuffix(".py")
    return path.split("/", 1)[0].removesuffix(".py")


def steps(
    raw: Path, root: str, named: dict[str, str], leaves: dict[str, tuple[str, ...]]
) -> dict[str, Any]:
    """Share of the samples under frame `root` spent in each named frame (inclusive) and in
    each group of leaf frames (where the stack ends: waiting on PostgreSQL, on Redis, ...)."""
    under = 0
    inside: Counter[str] = Counter()
    waiting: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit() or root not in stack:
            continue
        n = int(count)
        under += n
        for label, frame in named.items():
            if frame in stack:
                inside[label] += n
        leaf = stack.rsplit(";", 1)[-1]
        for label, frames in leaves.items():
            if any(frame in leaf for frame in frames):
                waiting[label] += n
                break
    if not under:
        return {}
    return {
        "samples": under,
        "steps_pct": {label: round(100 * inside[label] / under, 1) for label in named},
        "leaf_pct": {label: round(100 * waiting[label] / under, 1) for label in leaves},
    }


class Phase:
    """py-spy on several process trees during one phase: start, then `finish` for each tree's
    raw file (`name -> path`), those py-spy wrote (a process may have exited meanwhile).
    Only the thread holding the GIL is sampled: where the CPU goes, not where threads wait
    for it."""

    def __init__(self, pids: dict[int, str], seconds: int, out: Callable[[str], Path]) -> None:
        self.recording = {name: (record(pid, seconds, out(name), gil=True), out(name))
                          for pid, name in pids.items()}

    def finish(self, timeout: float = 120) -> dict[str, Path]:
        for process, _ in self.recording.values():
            process.wait(timeout=timeout)
        return {name: raw for name, (_, raw) in self.recording.items() if raw.exists()}
