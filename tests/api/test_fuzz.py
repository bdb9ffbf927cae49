"""A property-based fuzz of the API from its own OpenAPI document: whatever the
fuzzer sends, no answer is a 5xx and none breaks the document (statuses, content
types, bodies and headers as documented), and the token is never ignored."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.agents.harness import product
from tests.api.live import serving
from tests.api.shop import TOKEN, restock_suggestion, substitute_suggestion

EXAMPLES = 30
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    ignored_auth,
]


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    seed = [product("SKU-A"), restock_suggestion(1), substitute_suggestion(1)]
    with serving(tmp_path_factory.mktemp("fuzz"), seed) as url:
        yield url


@pytest.fixture(scope="module")
def api_schema(live_api: str) -> Any:
    document = httpx.get(f"{live_api}/openapi.json", timeout=10).json()
    loaded = schemathesis.openapi.from_dict(document)
    loaded.config.update(base_url=live_api)
    return loaded


def operations(loaded: Any) -> list[Any]:
    return [found.ok() for found in loaded.get_all_operations()]


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda mode: mode.value)
def test_no_answer_is_a_server_error_or_breaks_the_document(
    api_schema: Any, mode: GenerationMode
) -> None:
    for operation in operations(api_schema):
        if mode is GenerationMode.NEGATIVE and not list(operation.iter_parameters()):
            continue  # nothing it takes can be made invalid

        @given(case=operation.as_strategy(mode))
        # The same examples on every run: a negative case may take the token away as its
        # invalid part, which the call's own header puts back, so a random draw could
        # fail a run on a request that was valid when sent.
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any) -> None:
            # A query value of None is dropped on the wire: the request sent is not the
            # invalid one generated, and would be taken rightly.
            assume(not any(value is None for value in (case.query or {}).values()))
            case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS)

        fuzz()


def test_the_fuzzer_reaches_every_operation(api_schema: Any) -> None:
    found = {(operation.method.upper(), operation.path) for operation in operations(api_schema)}
    assert ("POST", "/orders") in found
    assert ("POST", "/suggestions/{suggestion_id}/approve") in found
    assert len(found) == 11
