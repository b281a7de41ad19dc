"""The OpenAPI document against the running engine, as a new user tries it: Schemathesis
finds nothing wrong, and /docs renders every operation in a real (headless) browser."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.conftest import child_env
from tests.e2e.stack import BIN, ROOT, Stack

pytestmark = pytest.mark.e2e

CONFIG = ROOT / "tests" / "e2e" / "schemathesis.toml"
SEED = "1"  # a fixed seed: the same cases every run


@pytest.mark.fuzz
def test_schemathesis_finds_no_failure(own_stack: Stack) -> None:
    """Every check on every operation (config and the reasons for its few exceptions:
    tests/e2e/schemathesis.toml), a bounded number of examples each."""
    client = own_stack.tenant(f"schemathesis-{uuid.uuid4().hex[:8]}", rate_limit="100000/second")
    env = {**child_env(own_stack.config), "SE_TEST_KEY": client.test_key,
           "SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_hooks", "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    done = subprocess.run(
        [str(BIN / "st"), "--no-color", "--config-file", str(CONFIG), "run",
         f"{own_stack.base_url}/openapi.json", "--seed", SEED, "--workers", "2"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    summary = re.search(r"(\d+) generated, (\d+) passed", done.stdout)
    print(f"\nschemathesis: {summary.group(0) if summary else '?'} "
          f"in {time.monotonic() - started:.0f} s")
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    assert summary is not None and summary.group(1) == summary.group(2), done.stdout[-3000:]


def test_docs_render_every_operation_in_a_real_browser(own_stack: Stack, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium renders /docs here (.ci/run installs it)"
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--disable-extensions", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path}",
         "--virtual-time-budget=15000", "--dump-dom", f"{own_stack.base_url}/docs"],
        capture_output=True, text=True, timeout=180, check=False,
    )
    dom = done.stdout
    assert done.returncode == 0 and "swagger-ui" in dom, done.stderr[-2000:]
    assert "Unable to render this definition" not in dom
    assert "OAS 3.1" in dom  # the version badge: Swagger UI read the 3.1 document
    document = requests.get(f"{own_stack.base_url}/openapi.json", timeout=10).json()
    listed = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom))
    assert listed == set(document["paths"])
    methods = re.findall(r'class="opblock-summary-method">(\w+)<', dom)
    assert len(methods) == sum(len(item) for item in document["paths"].values())
