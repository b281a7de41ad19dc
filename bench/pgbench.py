"""pgbench, the database ceiling of the benches: a custom transaction script, N clients, TPS.

Debian's pgbench (`/usr/bin/pgbench`, package postgresql-client) runs `script` for `seconds`
with `clients` connections on the simple query protocol, as psycopg2 speaks it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from procs import cpu_snapshot, cpu_usage
from sqlalchemy.engine import make_url

MISSING = "pgbench is not installed. On Debian/Ubuntu: sudo apt-get install -y postgresql-client"


def run(database_url: str, script: str, *, clients: int, seconds: int) -> dict[str, Any]:
    """TPS of `script` (pgbench's custom-script syntax) over `database_url`, and the cores
    each process used from 1 s after the start to 1 s before the end (pgbench's backends
    live only while it runs, so the window must lie inside its run)."""
    binary = shutil.which("pgbench")
    if binary is None:
        sys.exit(MISSING)
    url = make_url(database_url)
    with tempfile.TemporaryDirectory(prefix="se-pgbench-") as tmp:
        path = Path(tmp) / "transaction.sql"
        path.write_text(script)
        argv = [binary, "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432),
                "-U", url.username or "postgres", "-n", "-M", "simple", "-c", str(clients),
                "-j", str(min(clients, 2)), "-T", str(seconds), "-f", str(path),
                url.database or "postgres"]
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        time.sleep(1)
        before = cpu_snapshot()
        time.sleep(max(seconds - 2, 1))
        cpu = cpu_usage(before, cpu_snapshot(), {}, {process.pid: "pgbench"})
        out, err = process.communicate(timeout=seconds + 60)
    if process.returncode != 0:
        raise RuntimeError(f"pgbench failed ({process.returncode}): {err}{out}")
    return {**parse(out), "clients": clients, "seconds": seconds, "cpu": cpu}


def parse(out: str) -> dict[str, Any]:
    """Transactions, failures, average latency and TPS from pgbench's report."""
    tps = re.search(r"^tps = ([\d.]+) \(without initial connection time\)", out, re.M)
    processed = re.search(r"number of transactions actually processed: (\d+)", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    latency = re.search(r"latency average = ([\d.]+) ms", out)
    assert tps and processed, out
    return {
        "transactions": int(processed[1]),
        "failed": int(failed[1]) if failed else 0,
        "latency_avg_ms": float(latency[1]) if latency else None,
        "tps": round(float(tps[1]), 1),
    }
