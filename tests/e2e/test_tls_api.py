"""The API served over HTTPS by gunicorn's own TLS (--certfile/--keyfile), as it runs without a
load balancer: a client trusting the tests' CA gets answers; one trusting another CA refuses."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from app.config import Config
from tests.conftest import child_env
from tests.e2e.stack import BIN, Process
from tests.servers import free_port
from tests.support import eventually
from tests.tls import Authority, authority, wrong_authority  # noqa: F401

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def https_api(config: Config, authority: Authority,  # noqa: F811
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`gunicorn wsgi:app` with a certificate of `authority`; its https:// base URL."""
    issued = authority.issue("api")
    port = free_port()
    api = Process("api", [str(BIN / "gunicorn"), "wsgi:app", "--bind", f"127.0.0.1:{port}",
                          "--workers", "1", "--no-control-socket",
                          "--certfile", str(issued.cert), "--keyfile", str(issued.key)],
                  child_env(config), tmp_path_factory.mktemp("https") / "api.log")
    base = f"https://127.0.0.1:{port}"

    def answers() -> bool:
        api.check_alive()
        try:
            return requests.get(f"{base}/healthz", verify=authority.cert, timeout=5).ok
        except (requests.ConnectionError, requests.Timeout):  # a worker still booting
            return False

    api.start()
    try:
        eventually(answers, 60, what=f"{base}/healthz")
        yield base
    finally:
        api.stop()


def test_the_api_answers_over_https(https_api: str, authority: Authority) -> None:  # noqa: F811
    response = requests.get(f"{https_api}/readyz", verify=authority.cert, timeout=10)
    assert response.status_code == 200, response.text


def test_a_client_trusting_another_ca_refuses(https_api: str,
                                              wrong_authority: Authority) -> None:  # noqa: F811
    with pytest.raises(requests.exceptions.SSLError, match="certificate verify failed"):
        requests.get(f"{https_api}/healthz", verify=wrong_authority.cert, timeout=10)


def test_plain_http_gets_no_answer(https_api: str) -> None:
    with pytest.raises(requests.ConnectionError):
        requests.get(https_api.replace("https://", "http://") + "/healthz", timeout=10)
