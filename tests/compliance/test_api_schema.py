"""The OpenAPI schema matches behaviour: schemathesis generates requests for every operation of the schema
(valid and invalid ones) and checks each response against it — status codes, the one error shape, content
types, headers and bodies. It runs in-process against the WSGI app with a real client-credentials token of a
district that has data, with a bounded number of examples per operation."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.compliance.test_api import bearer, make_api_client, token_for
from tests.compliance.test_oneroster import load_roster

SCOPES = "roster.read roster.write results.read audit.read district.export"
EXAMPLES = 5  # per operation and mode: the whole run stays well under a minute


def excluded_checks(operation) -> list:
    """A write's acceptance depends on the database, not only on the schema: a well-formed record that names
    a school or class the district does not have is rightly refused with 400. Writes keep every other check
    (negative data rejected, status codes, error shape, content types, response bodies)."""
    return [positive_data_acceptance] if operation.method.upper() in {"PUT", "POST"} else []


@pytest.fixture
def api_token(transactional_db, client, world):
    app = make_api_client(world.district, "schemathesis", scopes=SCOPES)
    auth = bearer(token_for(client, app, scope=SCOPES))
    load_roster(client, auth)
    return auth["HTTP_AUTHORIZATION"]


def test_api_matches_its_schema(api_token):
    from django.core.wsgi import get_wsgi_application

    schema = schemathesis.openapi.from_wsgi("/api/v1/schema/?format=json", get_wsgi_application())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30
    failures = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            def run(case):
                case.call_and_validate(headers={"Authorization": api_token},
                                       excluded_checks=excluded_checks(operation))

            try:
                run()
            except Unsatisfiable:
                continue  # nothing in this operation can be made invalid (e.g. a bare POST, a free-text id)
            except (Exception, BaseExceptionGroup) as exc:  # collect every operation's failures, report all
                failures.append(f"{operation.method.upper()} {operation.path} [{mode.value}]: {exc!r}"[:3000])
    assert not failures, "\n\n".join(failures)
