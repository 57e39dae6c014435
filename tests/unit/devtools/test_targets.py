"""Where ``--target localstack`` looks: localstack-client's resolution, DynamoDB beside it."""

from __future__ import annotations

import pytest

from devtools.cloud.deploy import _environment
from devtools.cloud.targets import LocalStackEndpoints, localstack_endpoints
from infra.core.settings import Settings


@pytest.fixture(autouse=True)
def no_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "LOCALSTACK_HOST", "USE_SSL"):
        monkeypatch.delenv(name, raising=False)


def test_default_is_the_edge_port_on_localhost() -> None:
    assert localstack_endpoints() == LocalStackEndpoints(
        "http://localhost:4566", "http://localhost:4566"
    )


def test_localstack_host_names_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALSTACK_HOST", "127.0.0.1:4599")

    assert localstack_endpoints().edge == "http://127.0.0.1:4599"


def test_aws_endpoint_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALSTACK_HOST", "127.0.0.1:4599")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5000/")

    assert localstack_endpoints().edge == "http://127.0.0.1:5000"


def test_dynamodb_has_its_own_endpoint_when_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALSTACK_HOST", "127.0.0.1:4599")
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:8000")

    endpoints = localstack_endpoints()

    assert endpoints == LocalStackEndpoints("http://127.0.0.1:4599", "http://127.0.0.1:8000")
    assert endpoints.environment() == {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:4599",
        "AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:8000",
    }


def test_one_endpoint_for_everything_sets_one_variable() -> None:
    endpoints = LocalStackEndpoints("http://127.0.0.1:4566", "http://127.0.0.1:4566")

    assert endpoints.environment() == {"AWS_ENDPOINT_URL": "http://127.0.0.1:4566"}


def test_deployment_exports_carry_per_service_endpoints() -> None:
    settings = Settings.from_env(
        {
            "AWS_ENDPOINT_URL": "http://127.0.0.1:4566",
            "AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:8000",
        }
    )

    env = _environment(settings, {"RESULTS_TABLE": "results"})

    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:4566"
    assert env["AWS_ENDPOINT_URL_DYNAMODB"] == "http://127.0.0.1:8000"
    assert env["RESULTS_TABLE"] == "results"
