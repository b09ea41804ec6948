"""The OpenAPI document fuzzed with schemathesis against a real node: never a server error.

A node is started as its own process (``zstack-ctl start --foreground``) on a temporary data
directory; schemathesis generates requests for every operation of the node's OpenAPI
document, logged in as admin. ZStack's protocol answers a failed API with 503 and an error
code, so schemathesis's stock "server error" check (any 5xx) does not apply; the check here
is that no answer is a 500 and no error is ``SYS.1000`` (an internal error: a bug).
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings


@schemathesis.check
def no_internal_error(ctx: Any, response: Any, case: Any) -> bool:
    assert response.status_code != 500, f"HTTP 500: {response.text[:500]}"
    if response.status_code >= 500:
        body = response.json()
        assert isinstance(body, dict) and "error" in body, f"{response.status_code} without error"
        assert body["error"]["code"] != "SYS.1000", f"internal error: {body['error']}"
    return True


def test_no_input_makes_a_server_error(served: dict[str, str]) -> None:
    schema = schemathesis.openapi.from_url(f"{served['url']}/zstack/v1/openapi.json")
    headers = {"Authorization": f"OAuth {served['session']}"}
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case: Any) -> None:
            case.call_and_validate(base_url=served["url"], headers=headers,
                                   checks=[no_internal_error])

        try:
            fuzz()
        except Exception as exc:  # noqa: BLE001 - report every operation's failure at once
            failures.append(f"{operation.label}: {exc}")
    assert operations >= 20
    assert not failures, "\n\n".join(failures)
