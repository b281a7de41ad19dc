"""wrk, the closed-loop load generator of the benches: run it, read its numbers, count its CPU.

Debian packages wrk (`apt-get install wrk`). Without a script its text report is parsed; with
bench/wrk.lua it prints one `WRK_JSON {...}` line with the responses counted by status.
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parent / "wrk.lua"
MISSING = """wrk is not installed. On Debian/Ubuntu: sudo apt-get install -y wrk
(or build it from https://github.com/wg/wrk and put it on PATH)."""


@dataclass
class Wrk:
    """wrk with two threads and `connections` connections; `cpu_seconds` of its last run."""

    binary: str
    connections: int = 32
    cpu_seconds: float = 0.0

    @classmethod
    def find(cls, connections: int) -> Wrk:
        binary = shutil.which("wrk")
        if binary is None:
            sys.exit(MISSING)
        return cls(binary, connections)

    def version(self) -> str:
        run = subprocess.run([self.binary, "-v"], capture_output=True, text=True, check=False)
        return (run.stdout.splitlines() or [""])[0]

    def plain(self, url: str, seconds: int) -> dict[str, Any]:
        """GET `url` as fast as the server answers; wrk's own report."""
        return parse_plain(self._run(["--latency", url], seconds))

    def scripted(self, base: str, seconds: int, *args: str) -> dict[str, Any]:
        """bench/wrk.lua with `args` (METHOD PATH [API_KEY [BODY [RUN_ID]]]): counts by status.

        The timeout is long: a request wrk gave up on would still be served, after the phase.
        """
        out = self._run(["--timeout", "30s", "-s", str(SCRIPT), base, "--", *args], seconds)
        line = next(line for line in out.splitlines() if line.startswith("WRK_JSON "))
        data: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
        data["seconds"] = data["duration_us"] / 1e6
        return data

    def _run(self, argv: list[str], seconds: int) -> str:
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        process = subprocess.Popen(
            [self.binary, "-t2", f"-c{self.connections}", f"-d{seconds}s", *argv],
            stdout=subprocess.PIPE,
            text=True,
        )
        out, _ = process.communicate(timeout=seconds + 60)
        now = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu_seconds = now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime
        if process.returncode != 0:
            raise RuntimeError(f"wrk failed ({process.returncode}): {out}")
        return out


def parse_plain(out: str) -> dict[str, Any]:
    """The numbers of wrk's text report (run without a script)."""
    units = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}

    def ms(label: str) -> float:
        found = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        assert found, out
        return round(float(found[1]) * units[found[2]], 2)

    total = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert total and rps, out
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    return {
        "requests": int(total[1]),
        "requests_per_s": float(rps[1]),
        "non_2xx": int(bad[1]) if bad else 0,
        "socket_errors": sum(int(n) for n in sockets.groups()) if sockets else 0,
        "latency_ms": {"p50": ms("50"), "p90": ms("90"), "p99": ms("99")},
    }


def summary(data: dict[str, Any], ok: str) -> dict[str, Any]:
    """A scripted run: `ok` answers per second, the error share, the statuses, latency."""
    good = data["statuses"].get(ok, 0)
    attempted = data["requests"] + sum(data["socket_errors"].values())
    return {
        "seconds": round(data["seconds"], 2),
        "requests": data["requests"],
        "ok": good,
        "ok_per_s": round(good / data["seconds"], 1),
        "error_rate": round(1 - good / attempted, 4) if attempted else 1.0,
        "statuses": data["statuses"],
        "socket_errors": data["socket_errors"],
        "latency_ms": {k: round(v / 1000, 1) for k, v in data["latency_us"].items()},
    }
