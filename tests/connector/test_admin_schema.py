"""Property-based run of the admin API against its own OpenAPI schema: never a 5xx, and
every answer one the schema documents."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from connector.admin import build_admin_app
from connector.config import load_config
from connector.crypto import Keyring
from connector.daemon import Daemon
from connector.engine import Engine
from connector.runtime import Runtime
from connector.state import Store
from connector.systems import open_systems
from tests.conftest import write_config

TOKEN = "schema-run-token"


@pytest.fixture
def admin_schema(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    monkeypatch.setenv("T_ADMIN", TOKEN)
    config = load_config(write_config(tmp_path, extra='[daemon]\nadmin_token = "env:T_ADMIN"'))
    store = Store(config.store_path)
    keyring = Keyring(config.master_key)
    systems = open_systems(config)
    rt = Runtime(config, store, keyring, systems, Engine(config, store, keyring, systems))
    app = build_admin_app(Daemon(rt))
    yield schemathesis.openapi.from_asgi("/admin/openapi.json", app)
    store.close()


def test_admin_api_never_answers_5xx(admin_schema: Any) -> None:
    """Any request the schema allows, authorised or not, gets a deliberate answer, never 5xx."""
    operations = [result.ok() for result in admin_schema.get_all_operations()]
    assert len(operations) >= 6
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
            assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code}"
            refused = case.call(headers={"Authorization": "Bearer wrong"})
            assert refused.status_code == 401

        check()


def test_every_answer_is_one_the_schema_documents(admin_schema: Any) -> None:
    """Authorised or not, each answer's status, media type and body are in the schema: it
    listed 200/202 and 422 alone, while the routes answer 401 without the token, 404 for no
    such system, job or request, 409 for a decision a request's state refuses, and 422 for
    an address that is no address in another shape. A client made from the schema could
    not tell them."""
    checks = [status_code_conformance, content_type_conformance, response_schema_conformance]
    for operation in [result.ok() for result in admin_schema.get_all_operations()]:

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            for token in (TOKEN, "wrong"):
                case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=checks)

        check()


def test_the_schema_says_every_route_takes_the_bearer_token(admin_schema: Any) -> None:
    """Every route needs `Authorization: Bearer <token>`, and the schema says so (a client
    made from it sends the token); only the schema itself is served without one."""
    document = admin_schema.raw_schema
    schemes = document["components"]["securitySchemes"]
    assert list(schemes.values()) == [{"type": "http", "scheme": "bearer"}]
    (name,) = schemes
    assert document["security"] == [{name: []}]
    for methods in document["paths"].values():
        for operation in methods.values():
            assert "401" in operation["responses"]
