"""The mock LMS on its own: its messages verify (or, tampered, fail) exactly as the IMS specs say, its token
endpoint and services enforce what a real platform enforces, and pylti1p3 as a tool completes a launch, NRPS,
AGS and deep linking against it."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest

from tests.lti.platform import (
    AGS_SCOPES,
    CLAIM_AGS,
    CLAIM_CONTEXT,
    CLAIM_CUSTOM,
    CLAIM_DEPLOYMENT_ID,
    CLAIM_DL_SETTINGS,
    CLAIM_LAUNCH_PRESENTATION,
    CLAIM_LIS,
    CLAIM_MESSAGE_TYPE,
    CLAIM_NRPS,
    CLAIM_RESOURCE_LINK,
    CLAIM_ROLES,
    CLAIM_TARGET_LINK_URI,
    CLAIM_TOOL_PLATFORM,
    CLAIM_VERSION,
    MEDIA_LINEITEM,
    MEDIA_LINEITEMS,
    MEDIA_NRPS,
    MEDIA_RESULTS,
    MEDIA_SCORE,
    MISSING_CLAIMS,
    ROLE_INSTRUCTOR,
    ROLE_LEARNER,
    SCOPE_LINEITEM,
    SCOPE_NRPS,
    SCOPE_RESULT_READONLY,
    SCOPE_SCORE,
    TAMPER_OPTIONS,
    MockPlatform,
    PlatformError,
    RsaKey,
    client_assertion,
    deep_link_response,
    read_form,
    token_request,
)

TOOL = "http://tool.test"
LAUNCH_URL = TOOL + "/lti/launch"
COURSE = "Course-Bio-101"          # mixed case on purpose: the platform's URLs must stay lower case
TEACHER, STUDENT = "T-1", "S-1"


@pytest.fixture(scope="module")
def tool_key():
    return RsaKey.new()


@pytest.fixture
def platform(tool_key):
    with MockPlatform(page_size=3) as p:
        p.register_tool(login_url=TOOL + "/lti/login", launch_url=LAUNCH_URL, redirect_uris=[LAUNCH_URL],
                        jwks=tool_key.jwks(), deep_link_url=TOOL + "/lti/deep_link")
        p.add_user(TEACHER, name="Tess Teacher", given_name="Tess", family_name="Teacher", email="tess@school.test")
        p.add_user(STUDENT, name="Sam Student", given_name="Sam", family_name="Student", email="sam@school.test",
                   picture="https://pics.test/sam.png", sourced_id="sis-student-1")
        p.add_context(COURSE, title="Biology 101", label="BIO101", sourced_id="sis-class-1")
        p.enroll(COURSE, TEACHER, [ROLE_INSTRUCTOR])
        p.enroll(COURSE, STUDENT, [ROLE_LEARNER])
        p.add_resource_link(COURSE, "rl-exam", title="Exam 1", url=TOOL + "/exams/1",
                            custom={"exam": "1", "who": "$User.id"},
                            line_item={"label": "Exam 1", "scoreMaximum": 20, "tag": "exam"})
        yield p
        assert p.server_errors == []


# --- tiny HTTP client ---------------------------------------------------------------------------------------------


def http(method, url, *, form=None, body=None, headers=None):
    """(status, headers, text) of a real HTTP request."""
    data = None
    headers = dict(headers or {})
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode()


def auth_query(params, *, nonce="nonce-1", state="state-1", redirect_uri=LAUNCH_URL, **overrides):
    """What a tool sends to the platform's auth endpoint after the login initiation (Security Framework 5.1.1.2)."""
    query = {"scope": "openid", "response_type": "id_token", "response_mode": "form_post", "prompt": "none",
             "client_id": params["client_id"], "redirect_uri": redirect_uri, "login_hint": params["login_hint"],
             "lti_message_hint": params["lti_message_hint"], "nonce": nonce, "state": state}
    query.update(overrides)
    return {k: v for k, v in query.items() if v is not None}


def launch_token(platform, *, sub=STUDENT, tamper=frozenset(), **kwargs):
    _url, params = platform.login_initiation(sub=sub, context_id=COURSE, target_link_uri=TOOL + "/exams/1",
                                             resource_link_id="rl-exam", **kwargs)
    _redirect, form = platform.authorize(auth_query(params), tamper=tamper)
    return form["id_token"]


def verify(platform, token, **kwargs):
    """What a strict tool does with an id_token: key by kid from the JWKS URL, RS256 only, aud, iss, exp."""
    key = jwt.PyJWKClient(platform.jwks_url, cache_keys=False).get_signing_key_from_jwt(token)
    options = {"audience": platform.client_id, "issuer": platform.issuer}
    options.update(kwargs)
    return jwt.decode(token, key.key, algorithms=["RS256"], **options)


def bearer(platform, key, scopes):
    status, _h, text = http("POST", platform.token_url, form=token_request(platform, key, scopes))
    assert status == 200, text
    return {"Authorization": "Bearer " + json.loads(text)["access_token"]}


# --- launch -------------------------------------------------------------------------------------------------------


def test_login_initiation_then_auth_over_http_posts_a_verifiable_id_token_with_the_lti_claims(platform):
    url, params = platform.login_initiation(sub=STUDENT, context_id=COURSE, target_link_uri=TOOL + "/exams/1",
                                            resource_link_id="rl-exam")
    assert url == TOOL + "/lti/login"
    assert params["iss"] == platform.issuer and params["client_id"] == platform.client_id
    assert params["lti_deployment_id"] == "1" and params["target_link_uri"] == TOOL + "/exams/1"
    assert params["login_hint"] and params["lti_message_hint"]

    status, headers, page = http("GET", platform.auth_url + "?" + urllib.parse.urlencode(auth_query(params)))
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    action, fields = read_form(page)
    assert action == LAUNCH_URL and set(fields) == {"id_token", "state"} and fields["state"] == "state-1"
    assert "submit()" in page

    header = jwt.get_unverified_header(fields["id_token"])
    assert header["alg"] == "RS256" and header["kid"] == platform.kid
    claims = verify(platform, fields["id_token"])
    assert claims["sub"] == STUDENT and claims["nonce"] == "nonce-1" and claims["azp"] == platform.client_id
    assert claims["exp"] > claims["iat"]
    assert claims[CLAIM_MESSAGE_TYPE] == "LtiResourceLinkRequest" and claims[CLAIM_VERSION] == "1.3.0"
    assert claims[CLAIM_DEPLOYMENT_ID] == "1" and claims[CLAIM_TARGET_LINK_URI] == TOOL + "/exams/1"
    assert claims[CLAIM_RESOURCE_LINK] == {"id": "rl-exam", "title": "Exam 1"}
    assert claims[CLAIM_ROLES] == [ROLE_LEARNER]
    assert claims[CLAIM_CONTEXT]["id"] == COURSE and claims[CLAIM_CONTEXT]["title"] == "Biology 101"
    assert claims[CLAIM_CONTEXT]["label"] == "BIO101"
    assert claims["name"] == "Sam Student" and claims["given_name"] == "Sam" and claims["family_name"] == "Student"
    assert claims["email"] == "sam@school.test" and claims["picture"] == "https://pics.test/sam.png"
    assert claims[CLAIM_CUSTOM] == {"exam": "1", "who": STUDENT}
    assert claims[CLAIM_LIS] == {"person_sourcedid": "sis-student-1", "course_section_sourcedid": "sis-class-1"}
    assert claims[CLAIM_LAUNCH_PRESENTATION]["return_url"].startswith(platform.issuer)
    assert claims[CLAIM_TOOL_PLATFORM]["guid"] == platform.guid
    nrps = claims[CLAIM_NRPS]
    assert nrps["service_versions"] == ["2.0"] and nrps["context_memberships_url"].startswith(platform.issuer)
    assert nrps["context_memberships_url"] == nrps["context_memberships_url"].lower()
    ags = claims[CLAIM_AGS]
    assert set(ags["scope"]) == set(AGS_SCOPES)
    assert ags["lineitem"] == platform.resource_links(COURSE)["rl-exam"]["lineitem"] and ags["lineitem"] in platform.lineitems
    assert ags["lineitems"].startswith(platform.issuer) and CLAIM_DL_SETTINGS not in claims
    assert platform.last_launch["claims"]["nonce"] == "nonce-1"


def test_teacher_role_and_a_link_without_line_item(platform):
    platform.add_resource_link(COURSE, "rl-live", title="Live class")
    _url, params = platform.login_initiation(sub=TEACHER, context_id=COURSE, target_link_uri=TOOL + "/live",
                                             resource_link_id="rl-live")
    _r, form = platform.authorize(auth_query(params))
    claims = verify(platform, form["id_token"])
    assert claims[CLAIM_ROLES] == [ROLE_INSTRUCTOR]
    assert claims[CLAIM_LIS] == {"course_section_sourcedid": "sis-class-1"}   # no SIS id for this teacher
    assert "lineitem" not in claims[CLAIM_AGS] and "lineitems" in claims[CLAIM_AGS]
    assert claims[CLAIM_RESOURCE_LINK]["id"] == "rl-live"


def test_deep_linking_request_carries_the_settings_and_no_resource_link(platform):
    _url, params = platform.login_initiation(sub=TEACHER, context_id=COURSE, target_link_uri=TOOL + "/lti/deep_link",
                                             message_type="LtiDeepLinkingRequest")
    _r, form = platform.authorize(auth_query(params))
    claims = verify(platform, form["id_token"])
    assert claims[CLAIM_MESSAGE_TYPE] == "LtiDeepLinkingRequest"
    settings = claims[CLAIM_DL_SETTINGS]
    assert settings["deep_link_return_url"] == platform.deep_link_return_url
    assert settings["accept_types"] == ["ltiResourceLink"]
    assert settings["accept_presentation_document_targets"] and settings["accept_multiple"] is True
    assert settings["data"]
    assert CLAIM_RESOURCE_LINK not in claims and "lineitem" not in claims[CLAIM_AGS]


@pytest.mark.parametrize(("change", "error"), [
    ({"client_id": "client-unknown"}, "unauthorized_client"),
    ({"lti_message_hint": "never-issued"}, "login_required"),
    ({"login_hint": "someone-else"}, "login_required"),
    ({"nonce": None}, "invalid_request"),
    ({"response_mode": "query"}, "invalid_request"),
    ({"prompt": None}, "invalid_request"),
    ({"response_type": "code"}, "unsupported_response_type"),
    ({"scope": "profile"}, "invalid_scope"),
])
def test_auth_endpoint_refuses_a_bad_authentication_request(platform, change, error):
    _url, params = platform.login_initiation(sub=STUDENT, context_id=COURSE, target_link_uri=LAUNCH_URL,
                                             resource_link_id="rl-exam")
    with pytest.raises(PlatformError) as exc:
        platform.authorize(auth_query(params, **change))
    assert exc.value.error == error
    # Over HTTP the error goes back to the (registered) redirect_uri as a form_post, with the state.
    status, _h, page = http("GET", platform.auth_url + "?" + urllib.parse.urlencode(auth_query(params, **change)))
    action, fields = read_form(page)
    assert status == 200 and action == LAUNCH_URL
    assert fields["error"] == error and fields["state"] == "state-1" and "id_token" not in fields


def test_auth_endpoint_never_redirects_to_an_unregistered_uri(platform):
    _url, params = platform.login_initiation(sub=STUDENT, context_id=COURSE, target_link_uri=LAUNCH_URL,
                                             resource_link_id="rl-exam")
    with pytest.raises(PlatformError):
        platform.authorize(auth_query(params, redirect_uri="https://evil.test/steal"))
    status, _h, page = http("GET", platform.auth_url + "?"
                            + urllib.parse.urlencode(auth_query(params, redirect_uri="https://evil.test/steal")))
    assert status == 400 and "evil.test" not in page and "<form" not in page


def test_auth_endpoint_accepts_post(platform):
    _url, params = platform.login_initiation(sub=STUDENT, context_id=COURSE, target_link_uri=LAUNCH_URL,
                                             resource_link_id="rl-exam")
    status, _h, page = http("POST", platform.auth_url, form=auth_query(params))
    assert status == 200
    assert verify(platform, read_form(page)[1]["id_token"])["sub"] == STUDENT


# Each tamper option breaks exactly what it says: the strict check fails, and relaxing that one check passes.
TAMPERED = {
    "bad_signature": (jwt.InvalidSignatureError, {"options": {"verify_signature": False}}),
    "wrong_aud": (jwt.InvalidAudienceError, {"audience": "client-someone-else"}),
    "expired": (jwt.ExpiredSignatureError, {"options": {"verify_exp": False}}),
    "wrong_iss": (jwt.InvalidIssuerError, {"issuer": "https://lms.elsewhere.example"}),
}


@pytest.mark.parametrize("option", sorted(TAMPERED))
def test_tampered_id_token_fails_the_one_check_it_targets(platform, option):
    token = launch_token(platform, tamper=frozenset({option}))
    error, relaxed = TAMPERED[option]
    with pytest.raises(error):
        verify(platform, token)
    claims = verify(platform, token, **relaxed)
    assert claims[CLAIM_MESSAGE_TYPE] == "LtiResourceLinkRequest" and claims["nonce"] == "nonce-1"


def test_unknown_kid_is_not_in_the_jwks(platform):
    token = launch_token(platform, tamper=frozenset({"unknown_kid"}))
    kid = jwt.get_unverified_header(token)["kid"]
    assert kid not in {k["kid"] for k in platform.jwks()["keys"]}
    with pytest.raises(jwt.PyJWKClientError):
        verify(platform, token)


def test_alg_none_is_unsigned_and_refused_by_an_rs256_verifier(platform):
    token = launch_token(platform, tamper=frozenset({"alg_none"}))
    assert jwt.get_unverified_header(token)["alg"] == "none" and token.endswith(".")
    with pytest.raises(jwt.InvalidTokenError):
        jwt.decode(token, RsaKey.new().private.public_key(), algorithms=["RS256"], audience=platform.client_id)
    assert jwt.decode(token, options={"verify_signature": False})["sub"] == STUDENT


@pytest.mark.parametrize("option", ["wrong_deployment", "no_nonce", "wrong_nonce", "missing_claims"])
def test_tampered_claims_are_signed_validly(platform, option):
    claims = verify(platform, launch_token(platform, tamper=frozenset({option})))
    if option == "wrong_deployment":
        assert claims[CLAIM_DEPLOYMENT_ID] != platform.deployment_id
    elif option == "no_nonce":
        assert "nonce" not in claims
    elif option == "wrong_nonce":
        assert claims["nonce"] not in {"nonce-1", None}
    else:
        assert not any(name in claims for name in MISSING_CLAIMS)
        assert claims[CLAIM_DEPLOYMENT_ID] == platform.deployment_id and claims["nonce"] == "nonce-1"


def test_tamper_options_are_all_known_and_typos_are_refused(platform):
    assert TAMPER_OPTIONS >= set(TAMPERED) | {"unknown_kid", "alg_none", "wrong_deployment", "no_nonce",
                                              "missing_claims"}
    with pytest.raises(ValueError):
        launch_token(platform, tamper=frozenset({"bad_signatur"}))


def test_auth_tamper_applies_to_http_launches(platform):
    platform.auth_tamper = frozenset({"expired"})
    _url, params = platform.login_initiation(sub=STUDENT, context_id=COURSE, target_link_uri=LAUNCH_URL,
                                             resource_link_id="rl-exam")
    _s, _h, page = http("GET", platform.auth_url + "?" + urllib.parse.urlencode(auth_query(params)))
    with pytest.raises(jwt.ExpiredSignatureError):
        verify(platform, read_form(page)[1]["id_token"])


def test_launch_page_posts_the_login_initiation_to_the_tool(platform):
    url = platform.launch_page_url(sub=STUDENT, context_id=COURSE, target_link_uri=LAUNCH_URL,
                                   resource_link_id="rl-exam")
    status, _h, page = http("GET", url)
    action, fields = read_form(page)
    assert status == 200 and action == TOOL + "/lti/login" and "submit()" in page
    assert set(fields) == {"iss", "login_hint", "target_link_uri", "lti_message_hint", "client_id",
                           "lti_deployment_id"}
    _r, form = platform.authorize(auth_query(fields))       # the hints it carries are the platform's own
    assert verify(platform, form["id_token"])["sub"] == STUDENT
    assert http("GET", platform.issuer + "/launch/0badc0de")[0] == 404


def test_replay_last_id_token_gives_the_same_token_and_state(platform):
    token = launch_token(platform)
    redirect, form = platform.replay_last_id_token()
    assert redirect == LAUNCH_URL and form == {"id_token": token, "state": "state-1"}


def test_key_rotation_keeps_the_old_key_published_until_dropped(platform):
    old_kid = platform.kid
    old_token = launch_token(platform)
    new_kid = platform.rotate_keys()
    assert new_kid != old_kid and platform.kid == new_kid
    new_token = launch_token(platform)
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    status, _h, text = http("GET", platform.jwks_url)
    assert status == 200 and {k["kid"] for k in json.loads(text)["keys"]} == {old_kid, new_kid}
    assert verify(platform, old_token)["sub"] == verify(platform, new_token)["sub"] == STUDENT
    platform.drop_old_keys()
    assert [k["kid"] for k in platform.jwks()["keys"]] == [new_kid]
    with pytest.raises(jwt.PyJWKClientError):
        verify(platform, old_token)
    jwk = platform.jwks()["keys"][0]
    assert jwk["kty"] == "RSA" and jwk["alg"] == "RS256" and jwk["use"] == "sig" and "d" not in jwk


# --- token endpoint -----------------------------------------------------------------------------------------------


def test_token_endpoint_grants_the_requested_scopes_for_a_valid_assertion(platform, tool_key):
    status, headers, text = http("POST", platform.token_url,
                                 form=token_request(platform, tool_key, [SCOPE_NRPS, SCOPE_SCORE]))
    assert status == 200, text
    body = json.loads(text)
    assert body["token_type"] == "Bearer" and body["expires_in"] > 0 and body["access_token"]
    assert set(body["scope"].split()) == {SCOPE_NRPS, SCOPE_SCORE}
    assert headers["Cache-Control"] == "no-store"
    recorded = [r for r in platform.requests if r.path == "/token"][-1]
    assert recorded.method == "POST" and recorded.body["client_assertion"] == "***"


@pytest.mark.parametrize("case", ["bad_signature", "wrong_aud", "expired", "wrong_iss", "wrong_sub", "no_jti",
                                  "unknown_kid", "hs256"])
def test_token_endpoint_refuses_a_bad_client_assertion(platform, tool_key, case):
    form = token_request(platform, tool_key, [SCOPE_NRPS])
    past = int(datetime.now(UTC).timestamp()) - 600
    if case == "bad_signature":
        form["client_assertion"] = client_assertion(platform, RsaKey.new(kid=tool_key.kid))
    elif case == "wrong_aud":
        form["client_assertion"] = client_assertion(platform, tool_key, aud=platform.issuer + "/elsewhere")
    elif case == "expired":
        form["client_assertion"] = client_assertion(platform, tool_key, iat=past - 60, exp=past)
    elif case == "wrong_iss":
        form["client_assertion"] = client_assertion(platform, tool_key, iss="client-other")
    elif case == "wrong_sub":
        form["client_assertion"] = client_assertion(platform, tool_key, sub="client-other")
    elif case == "no_jti":
        form["client_assertion"] = client_assertion(platform, tool_key, jti=None)
    elif case == "unknown_kid":
        form["client_assertion"] = client_assertion(platform, RsaKey.new())
    else:
        form["client_assertion"] = jwt.encode({"iss": platform.client_id, "sub": platform.client_id,
                                               "aud": platform.token_url, "exp": past + 700, "iat": past + 600,
                                               "jti": "x"}, "shared-secret-of-32-bytes-at-least!", algorithm="HS256")
    status, headers, text = http("POST", platform.token_url, form=form)
    assert status == 401 and json.loads(text)["error"] == "invalid_client"


def test_token_endpoint_refuses_a_replayed_jti(platform, tool_key):
    form = token_request(platform, tool_key, [SCOPE_NRPS])
    assert http("POST", platform.token_url, form=form)[0] == 200
    status, _h, text = http("POST", platform.token_url, form=form)
    assert status == 401 and "jti" in json.loads(text)["error_description"]


@pytest.mark.parametrize(("change", "status", "error"), [
    ({"grant_type": "authorization_code"}, 400, "unsupported_grant_type"),
    ({"client_assertion_type": "urn:other"}, 401, "invalid_client"),
    ({"client_assertion": ""}, 401, "invalid_client"),
    ({"scope": "https://example.test/scope/admin"}, 400, "invalid_scope"),
])
def test_token_endpoint_refuses_a_bad_request(platform, tool_key, change, status, error):
    form = {**token_request(platform, tool_key, [SCOPE_NRPS]), **change}
    got, _h, text = http("POST", platform.token_url, form=form)
    assert (got, json.loads(text)["error"]) == (status, error)


def test_token_endpoint_grants_only_the_scopes_registered_for_the_tool(platform, tool_key):
    platform.register_tool(login_url=TOOL + "/lti/login", launch_url=LAUNCH_URL, redirect_uris=[LAUNCH_URL],
                           jwks=tool_key.jwks(), scopes=frozenset({SCOPE_NRPS}))
    status, _h, text = http("POST", platform.token_url, form=token_request(platform, tool_key, [SCOPE_NRPS, SCOPE_SCORE]))
    assert status == 200 and json.loads(text)["scope"] == SCOPE_NRPS
    claims = verify(platform, launch_token(platform))
    assert CLAIM_AGS not in claims and CLAIM_NRPS in claims


class _JwksServer:
    """The tool's JWKS over real HTTP, as a deployed tool publishes it."""

    def __init__(self, jwks):
        self.jwks = jwks
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                payload = json.dumps(server.jwks).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/lti/jwks"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_token_endpoint_reads_the_tool_keys_from_its_jwks_url_and_follows_tool_key_rotation(platform, tool_key):
    jwks_server = _JwksServer(tool_key.jwks())
    try:
        platform.register_tool(login_url=TOOL + "/lti/login", launch_url=LAUNCH_URL, redirect_uris=[LAUNCH_URL],
                               jwks_url=jwks_server.url)
        assert http("POST", platform.token_url, form=token_request(platform, tool_key, [SCOPE_NRPS]))[0] == 200
        new_key = RsaKey.new()
        assert http("POST", platform.token_url, form=token_request(platform, new_key, [SCOPE_NRPS]))[0] == 401
        jwks_server.jwks = {"keys": [new_key.public_jwk(), tool_key.public_jwk()]}
        assert http("POST", platform.token_url, form=token_request(platform, new_key, [SCOPE_NRPS]))[0] == 200
    finally:
        jwks_server.close()


def test_token_endpoint_calls_a_jwks_callable(platform, tool_key):
    calls = []
    platform.register_tool(login_url=TOOL + "/lti/login", launch_url=LAUNCH_URL, redirect_uris=[LAUNCH_URL],
                           jwks=lambda: calls.append(1) or tool_key.jwks())
    assert http("POST", platform.token_url, form=token_request(platform, tool_key, [SCOPE_NRPS]))[0] == 200
    assert calls


# --- service authorization ----------------------------------------------------------------------------------------


def test_services_check_the_bearer_token_scope_and_expiry_on_every_call(platform, tool_key):
    url = f"{platform.issuer}/api/contexts/c1/memberships"
    status, headers, _t = http("GET", url)
    assert status == 401 and "invalid_token" in headers["WWW-Authenticate"]
    assert http("GET", url, headers={"Authorization": "Bearer made-up"})[0] == 401
    scores_only = bearer(platform, tool_key, [SCOPE_SCORE])
    status, _h, text = http("GET", url, headers=scores_only)
    assert status == 403 and json.loads(text)["error"] == "insufficient_scope"
    nrps = bearer(platform, tool_key, [SCOPE_NRPS])
    assert http("GET", url, headers=nrps)[0] == 200
    platform.expire_tokens()
    status, _h, text = http("GET", url, headers=nrps)
    assert status == 401 and "expired" in json.loads(text)["error_description"]
    recorded = [r for r in platform.requests if r.path.startswith("/api/")]
    assert all("made-up" not in str(r.headers) for r in recorded)
    assert any(r.headers.get("Authorization") == "Bearer ***" for r in recorded)


# --- NRPS ---------------------------------------------------------------------------------------------------------


def test_nrps_pages_through_every_member_with_link_next(platform, tool_key):
    for n in range(8):
        platform.add_user(f"S-{n + 2}", name=f"Student {n + 2}", email=f"s{n + 2}@school.test")
        platform.enroll(COURSE, f"S-{n + 2}", [ROLE_LEARNER])
    auth = bearer(platform, tool_key, [SCOPE_NRPS])
    url = verify(platform, launch_token(platform))[CLAIM_NRPS]["context_memberships_url"]
    seen, pages = [], 0
    while url:
        status, headers, text = http("GET", url, headers=auth)
        assert status == 200 and headers["Content-Type"] == MEDIA_NRPS
        body = json.loads(text)
        assert body["context"]["id"] == COURSE and len(body["members"]) <= 3
        seen += body["members"]
        pages += 1
        link = headers.get("Link")
        url = link[1:link.index(">")] if link else None
        if link:
            assert link.endswith('rel="next"') and url == url.lower()
    assert pages == 4 and len(seen) == 10 and len({m["user_id"] for m in seen}) == 10
    sam = next(m for m in seen if m["user_id"] == STUDENT)
    assert sam == {"user_id": STUDENT, "roles": [ROLE_LEARNER], "status": "Active", "name": "Sam Student",
                   "given_name": "Sam", "family_name": "Student", "email": "sam@school.test",
                   "lis_person_sourcedid": "sis-student-1", "picture": "https://pics.test/sam.png"}
    assert "lis_person_sourcedid" not in next(m for m in seen if m["user_id"] == TEACHER)


def test_nrps_role_filter_and_unenrollment(platform, tool_key):
    auth = bearer(platform, tool_key, [SCOPE_NRPS])
    base = f"{platform.issuer}/api/contexts/c1/memberships"

    def members(query=""):
        status, _h, text = http("GET", base + query, headers=auth)
        assert status == 200
        return {m["user_id"]: m for m in json.loads(text)["members"]}

    assert set(members("?" + urllib.parse.urlencode({"role": ROLE_INSTRUCTOR}))) == {TEACHER}
    assert set(members("?rlid=rl-exam")) == {TEACHER, STUDENT}
    assert http("GET", base + "?rlid=rl-elsewhere", headers=auth)[0] == 404
    assert set(members("?role=Learner")) == {STUDENT}
    platform.unenroll(COURSE, STUDENT, inactive=True)
    assert members()[STUDENT]["status"] == "Inactive"
    platform.unenroll(COURSE, STUDENT)
    assert set(members()) == {TEACHER}
    platform.enroll(COURSE, TEACHER, [ROLE_INSTRUCTOR, ROLE_LEARNER])
    assert members()[TEACHER]["roles"] == [ROLE_INSTRUCTOR, ROLE_LEARNER]


# --- AGS ----------------------------------------------------------------------------------------------------------


def score(user=STUDENT, given=15, maximum=20, *, at=None, **extra):
    at = at or datetime.now(UTC)
    body = {"userId": user, "scoreGiven": given, "scoreMaximum": maximum, "activityProgress": "Completed",
            "gradingProgress": "FullyGraded", "timestamp": at.isoformat(), "comment": "well done"}
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


def post_score(platform, auth, lineitem, body, content_type=MEDIA_SCORE):
    return http("POST", lineitem + "/scores", body=body, headers={**auth, "Content-Type": content_type})


def test_ags_line_items_create_filter_update_delete(platform, tool_key):
    auth = bearer(platform, tool_key, [SCOPE_LINEITEM])
    container = verify(platform, launch_token(platform))[CLAIM_AGS]["lineitems"]
    status, headers, text = http("POST", container, body={"label": "Quiz 3", "scoreMaximum": 10, "tag": "quiz",
                                                          "resourceId": "quiz-3"},
                                 headers={**auth, "Content-Type": MEDIA_LINEITEM})
    assert status == 201 and headers["Content-Type"] == MEDIA_LINEITEM
    quiz = json.loads(text)
    assert quiz["id"].startswith(container + "/") and quiz["label"] == "Quiz 3" and "scores" not in quiz

    def listing(query=""):
        status, headers, text = http("GET", container + query, headers=auth)
        assert status == 200 and headers["Content-Type"] == MEDIA_LINEITEMS
        return [i["label"] for i in json.loads(text)]

    assert listing() == ["Exam 1", "Quiz 3"]
    assert listing("?tag=quiz") == ["Quiz 3"] and listing("?resource_id=quiz-3") == ["Quiz 3"]
    assert listing("?resource_link_id=rl-exam") == ["Exam 1"]
    status, _h, text = http("PUT", quiz["id"], body={**quiz, "label": "Quiz three", "scoreMaximum": 12},
                            headers={**auth, "Content-Type": MEDIA_LINEITEM})
    assert status == 200 and json.loads(text)["label"] == "Quiz three"
    assert platform.lineitems[quiz["id"]]["scoreMaximum"] == 12
    assert set(platform.lineitems[quiz["id"]]) == {"id", "label", "scoreMaximum", "tag", "resourceId", "scores"}
    assert http("DELETE", quiz["id"], headers=auth)[0] == 204
    assert http("GET", quiz["id"], headers=auth)[0] == 404 and listing() == ["Exam 1"]
    # Invalid line items are refused.
    for bad in ({"scoreMaximum": 10}, {"label": "x", "scoreMaximum": 0}, {"label": "x", "scoreMaximum": 5,
                                                                          "resourceLinkId": "rl-elsewhere"}):
        assert http("POST", container, body=bad, headers={**auth, "Content-Type": MEDIA_LINEITEM})[0] == 400
    readonly = bearer(platform, tool_key, [AGS_SCOPES[1]])
    assert http("GET", container, headers=readonly)[0] == 200
    assert http("POST", container, body={"label": "x", "scoreMaximum": 1},
                headers={**readonly, "Content-Type": MEDIA_LINEITEM})[0] == 403


def test_ags_line_item_container_pages(platform, tool_key):
    auth = bearer(platform, tool_key, [SCOPE_LINEITEM])
    for n in range(6):
        platform.add_resource_link(COURSE, f"rl-{n}", title=f"Quiz {n}", line_item={"label": f"Quiz {n}",
                                                                                        "scoreMaximum": 5})
    url, labels = f"{platform.issuer}/api/contexts/c1/line_items", []
    while url:
        _s, headers, text = http("GET", url, headers=auth)
        labels += [i["label"] for i in json.loads(text)]
        link = headers.get("Link")
        url = link[1:link.index(">")] if link else None
    assert labels == ["Exam 1"] + [f"Quiz {n}" for n in range(6)]


@pytest.mark.parametrize(("change", "status"), [
    ({"userId": None}, 400),
    ({"userId": "not-in-course"}, 422),
    ({"activityProgress": "Done"}, 400),
    ({"gradingProgress": None}, 400),
    ({"timestamp": None}, 400),
    ({"timestamp": "2026-12-01T10:00:00"}, 400),          # no offset
    ({"timestamp": "yesterday"}, 400),
    ({"scoreMaximum": None}, 400),                       # scoreGiven without scoreMaximum
    ({"scoreGiven": -1}, 400),
    ({"scoreGiven": "15"}, 400),
    ({"scoreMaximum": 0}, 400),
])
def test_ags_score_validation(platform, tool_key, change, status):
    auth = bearer(platform, tool_key, [SCOPE_SCORE])
    lineitem = platform.resource_links(COURSE)["rl-exam"]["lineitem"]
    got, _h, text = post_score(platform, auth, lineitem, score(**change))
    assert got == status, text
    assert platform.gradebook(COURSE) == {}


def test_ags_score_needs_the_score_media_type_and_scope(platform, tool_key):
    lineitem = platform.resource_links(COURSE)["rl-exam"]["lineitem"]
    auth = bearer(platform, tool_key, [SCOPE_SCORE])
    assert post_score(platform, auth, lineitem, score(), content_type="application/json")[0] == 415
    assert post_score(platform, bearer(platform, tool_key, [SCOPE_LINEITEM]), lineitem, score())[0] == 403
    assert post_score(platform, auth, lineitem, score())[0] == 204


def test_ags_scores_newer_wins_older_and_equal_are_ignored_and_results_are_scaled(platform, tool_key):
    auth = bearer(platform, tool_key, [SCOPE_SCORE, SCOPE_RESULT_READONLY])
    lineitem = platform.resource_links(COURSE)["rl-exam"]["lineitem"]
    t0 = datetime(2026, 12, 1, 10, 0, 0, 123000, tzinfo=UTC)
    assert post_score(platform, auth, lineitem, score(given=5, maximum=10, at=t0, activityProgress="Submitted",
                                                      gradingProgress="Pending"))[0] == 204
    assert post_score(platform, auth, lineitem, score(given=8, maximum=10, at=t0 + timedelta(seconds=1)))[0] == 204
    assert post_score(platform, auth, lineitem, score(given=1, maximum=10, at=t0 + timedelta(milliseconds=500)))[0] == 204
    assert post_score(platform, auth, lineitem, score(given=2, maximum=10, at=t0 + timedelta(seconds=1)))[0] == 204
    book = platform.gradebook(COURSE)
    assert book[("Exam 1", STUDENT)]["scoreGiven"] == 8 and book[("rl-exam", STUDENT)]["scoreGiven"] == 8
    assert book[("Exam 1", STUDENT)]["gradingProgress"] == "FullyGraded"
    assert [s["scoreGiven"] for s in platform.ignored_scores] == [1, 2]
    assert platform.lineitems[lineitem]["scores"][STUDENT]["scoreGiven"] == 8
    status, headers, text = http("GET", lineitem + "/results", headers=auth)
    assert status == 200 and headers["Content-Type"] == MEDIA_RESULTS
    (result,) = json.loads(text)
    assert result["userId"] == STUDENT and result["scoreOf"] == lineitem
    assert result["resultScore"] == 16 and result["resultMaximum"] == 20 and result["comment"] == "well done"
    # A score without scoreGiven (progress only) is stored, and results then carry no resultScore.
    post_score(platform, auth, lineitem, score(user=TEACHER, given=None, maximum=None,
                                               activityProgress="Started", gradingProgress="NotReady", comment=None))
    _s, _h, text = http("GET", lineitem + "/results?user_id=" + TEACHER, headers=auth)
    assert json.loads(text) == [{"id": f"{lineitem}/results/{TEACHER}", "scoreOf": lineitem, "userId": TEACHER}]


def test_fail_next_injects_failures_then_lets_calls_through(platform, tool_key):
    auth = bearer(platform, tool_key, [SCOPE_SCORE])
    lineitem = platform.resource_links(COURSE)["rl-exam"]["lineitem"]
    platform.fail_next(lineitem + "/scores", 2, status=503)
    assert post_score(platform, auth, lineitem, score(at=datetime(2026, 1, 1, tzinfo=UTC)))[0] == 503
    assert post_score(platform, auth, lineitem, score(at=datetime(2026, 1, 2, tzinfo=UTC)))[0] == 503
    assert platform.gradebook(COURSE) == {}
    assert post_score(platform, auth, lineitem, score(at=datetime(2026, 1, 3, tzinfo=UTC)))[0] == 204
    assert platform.gradebook(COURSE)[("Exam 1", STUDENT)]["timestamp"].startswith("2026-01-03")
    platform.fail_next("/token", 1, status=429, retry_after=7)
    status, headers, _t = http("POST", platform.token_url, form=token_request(platform, tool_key, [SCOPE_SCORE]))
    assert (status, headers["Retry-After"]) == (429, "7")
    assert http("POST", platform.token_url, form=token_request(platform, tool_key, [SCOPE_SCORE]))[0] == 200


# --- deep linking return ------------------------------------------------------------------------------------------


def deep_link_data(platform):
    _url, params = platform.login_initiation(sub=TEACHER, context_id=COURSE, target_link_uri=TOOL + "/lti/deep_link",
                                             message_type="LtiDeepLinkingRequest")
    _r, form = platform.authorize(auth_query(params))
    return verify(platform, form["id_token"])[CLAIM_DL_SETTINGS]["data"]


ITEMS = [{"type": "ltiResourceLink", "title": "Exam 2", "url": TOOL + "/exams/2", "custom": {"exam": "2"},
          "lineItem": {"scoreMaximum": 50, "label": "Exam 2 (graded)", "tag": "exam", "resourceId": "exam-2"}},
         {"type": "ltiResourceLink", "title": "Live class", "url": TOOL + "/sessions/9"}]


def test_deep_link_return_places_the_links_and_their_line_items(platform, tool_key):
    data = deep_link_data(platform)
    status, _h, page = http("POST", platform.deep_link_return_url,
                            form={"JWT": deep_link_response(platform, tool_key, data=data, items=ITEMS)})
    assert status == 200 and "Content added" in page
    assert platform.deep_links[COURSE] == ITEMS
    links = platform.resource_links(COURSE)
    created = [link for link_id, link in links.items() if link_id not in {"rl-exam"}]
    assert [(c["title"], c["url"], c["custom"]) for c in created] == [
        ("Exam 2", TOOL + "/exams/2", {"exam": "2"}), ("Live class", TOOL + "/sessions/9", {})]
    item = platform.lineitems[created[0]["lineitem"]]
    assert (item["label"], item["scoreMaximum"], item["tag"], item["resourceId"], item["resourceLinkId"]) == (
        "Exam 2 (graded)", 50, "exam", "exam-2", created[0]["id"])
    assert created[1]["lineitem"] is None
    # The new link launches with its line item and custom parameters.
    _url, params = platform.login_initiation(sub=STUDENT, context_id=COURSE, target_link_uri=TOOL + "/exams/2",
                                             resource_link_id=created[0]["id"])
    claims = verify(platform, platform.authorize(auth_query(params))[1]["id_token"])
    assert claims[CLAIM_AGS]["lineitem"] == created[0]["lineitem"] and claims[CLAIM_CUSTOM] == {"exam": "2"}


@pytest.mark.parametrize("case", ["bad_signature", "wrong_aud", "expired", "wrong_iss", "no_nonce", "data_not_echoed",
                                  "wrong_deployment", "wrong_message_type", "wrong_version", "unaccepted_type",
                                  "bad_line_item"])
def test_deep_link_return_refuses_a_bad_response(platform, tool_key, case):
    data = deep_link_data(platform)
    past = int(datetime.now(UTC).timestamp()) - 3600
    kwargs = {
        "wrong_aud": {"aud": ["https://other-lms.test"]},
        "expired": {"iat": past - 600, "exp": past},
        "wrong_iss": {"iss": "client-other"},
        "no_nonce": {"nonce": None},
        "data_not_echoed": {"https://purl.imsglobal.org/spec/lti-dl/claim/data": None},
        "wrong_deployment": {CLAIM_DEPLOYMENT_ID: "2"},
        "wrong_message_type": {CLAIM_MESSAGE_TYPE: "LtiResourceLinkRequest"},
        "wrong_version": {CLAIM_VERSION: "1.1"},
    }.get(case, {})
    items = ITEMS
    if case == "unaccepted_type":
        items = [{"type": "html", "html": "<p>hi</p>"}]
    elif case == "bad_line_item":
        items = [{"type": "ltiResourceLink", "title": "x", "lineItem": {"label": "x"}}]
    key = RsaKey.new(kid=tool_key.kid) if case == "bad_signature" else tool_key
    status, _h, page = http("POST", platform.deep_link_return_url,
                            form={"JWT": deep_link_response(platform, key, data=data, items=items, **kwargs)})
    assert status == 400 and "Deep linking failed" in page
    assert platform.deep_links[COURSE] == [] and set(platform.resource_links(COURSE)) == {"rl-exam"}


def test_deep_link_return_refuses_a_replayed_response(platform, tool_key):
    token = deep_link_response(platform, tool_key, data=deep_link_data(platform), items=ITEMS[1:])
    assert http("POST", platform.deep_link_return_url, form={"JWT": token})[0] == 200
    assert http("POST", platform.deep_link_return_url, form={"JWT": token})[0] == 400
    assert len(platform.deep_links[COURSE]) == 1


def test_deep_link_return_records_tool_messages(platform, tool_key):
    token = deep_link_response(platform, tool_key, data=deep_link_data(platform), items=[],
                               **{"https://purl.imsglobal.org/spec/lti-dl/claim/msg": "Nothing picked"})
    assert http("POST", platform.deep_link_return_url, form={"JWT": token})[0] == 200
    assert platform.deep_link_messages == [{"context_id": COURSE, "msg": "Nothing picked"}]


def test_unknown_paths_and_methods(platform, tool_key):
    assert http("GET", platform.issuer + "/nope")[0] == 404
    auth = bearer(platform, tool_key, [SCOPE_NRPS])
    assert http("GET", platform.issuer + "/api/contexts/c99/memberships", headers=auth)[0] == 404
    assert http("POST", platform.issuer + "/api/contexts/c1/memberships", headers=auth, body=b"")[0] == 405


# --- pylti1p3 as the tool: the proof that the platform speaks the protocol as a real tool expects -----------------

from pylti1p3.cookie import CookieService  # noqa: E402
from pylti1p3.deep_link_resource import DeepLinkResource  # noqa: E402
from pylti1p3.grade import Grade  # noqa: E402
from pylti1p3.lineitem import LineItem  # noqa: E402
from pylti1p3.message_launch import MessageLaunch  # noqa: E402
from pylti1p3.oidc_login import OIDCLogin  # noqa: E402
from pylti1p3.redirect import Redirect  # noqa: E402
from pylti1p3.request import Request as LtiRequest  # noqa: E402
from pylti1p3.session import SessionService  # noqa: E402
from pylti1p3.tool_config import ToolConfDict  # noqa: E402


class ToolRequest(LtiRequest):
    """One browser request to the tool: its parameters plus the browser's session and cookies."""

    def __init__(self, params: dict, browser: dict):
        self._params = params
        self._browser = browser

    @property
    def session(self):
        return self._browser.setdefault("session", {})

    @property
    def cookies(self):
        return self._browser.setdefault("cookies", {})

    def is_secure(self) -> bool:
        return False

    def get_param(self, key):
        return self._params.get(key)


class ToolCookies(CookieService):
    def __init__(self, request: ToolRequest):
        self._jar = request.cookies

    def get_cookie(self, name):
        return self._jar.get(f"{self._cookie_prefix}-{name}")

    def set_cookie(self, name, value, exp=3600):
        self._jar[f"{self._cookie_prefix}-{name}"] = value


class ToolRedirect(Redirect):
    def __init__(self, url):
        self._url = url

    def do_redirect(self):
        return self._url

    def do_js_redirect(self):
        return self._url

    def set_redirect_url(self, location):
        self._url = location

    def get_redirect_url(self):
        return self._url


class ToolLogin(OIDCLogin):
    def __init__(self, request, tool_conf):
        super().__init__(request, tool_conf, SessionService(request), ToolCookies(request))

    def get_redirect(self, url):
        return ToolRedirect(url)


class NonceConsumingSession(SessionService):
    """What a tool must add to pylti1p3 2.0.0: a nonce is good for one launch (the stock check only looks it up)."""

    def check_nonce(self, nonce):
        return self.data_storage._request.session.pop(self._get_key("nonce", nonce), None) is not None


class ToolLaunch(MessageLaunch):
    def __init__(self, request, tool_conf, session_service=None):
        super().__init__(request, tool_conf, session_service or NonceConsumingSession(request), ToolCookies(request))

    def _get_request_param(self, key):
        return self._request.get_param(key)


@pytest.fixture
def tool_conf(platform, tool_key):
    conf = ToolConfDict({platform.issuer: [{
        "default": True, "client_id": platform.client_id, "auth_login_url": platform.auth_url,
        "auth_token_url": platform.token_url, "key_set_url": platform.jwks_url,
        "deployment_ids": [platform.deployment_id]}]})
    conf.set_private_key(platform.issuer, tool_key.private_pem(), client_id=platform.client_id)
    conf.set_public_key(platform.issuer, tool_key.public_pem(), client_id=platform.client_id)
    # pylti1p3 names its key by the JWK thumbprint: the platform reads the tool's JWKS from the library itself.
    platform.register_tool(login_url=TOOL + "/lti/login", launch_url=LAUNCH_URL, redirect_uris=[LAUNCH_URL],
                           jwks=conf.get_jwks, deep_link_url=TOOL + "/lti/deep_link")
    return conf


def pylti_launch(platform, conf, *, browser=None, sub=STUDENT, tamper=frozenset(), session=None, **initiation):
    """A whole launch, the tool being pylti1p3: login initiation → OIDCLogin → GET /auth over HTTP → MessageLaunch."""
    browser = {} if browser is None else browser
    initiation = {"context_id": COURSE, "target_link_uri": LAUNCH_URL, "resource_link_id": "rl-exam", **initiation}
    _login_url, params = platform.login_initiation(sub=sub, **initiation)
    auth_url = ToolLogin(ToolRequest(params, browser), conf).get_redirect_object(LAUNCH_URL).get_redirect_url()
    assert auth_url.startswith(platform.auth_url + "?")
    platform.auth_tamper = frozenset(tamper)
    status, _h, page = http("GET", auth_url)
    platform.auth_tamper = frozenset()
    assert status == 200
    action, fields = read_form(page)
    assert action == LAUNCH_URL
    request = ToolRequest(fields, browser)
    launch = ToolLaunch(request, conf, session(request) if session else None)
    launch.validate()
    return launch, fields


def test_pylti1p3_completes_a_launch_then_nrps_and_ags(platform, tool_conf):
    for n in range(5):
        platform.add_user(f"S-{n + 2}", name=f"Student {n + 2}")
        platform.enroll(COURSE, f"S-{n + 2}", [ROLE_LEARNER])
    launch, _fields = pylti_launch(platform, tool_conf)
    data = launch.get_launch_data()
    assert launch.is_resource_launch() and launch.check_student_access() and not launch.check_teacher_access()
    assert data["sub"] == STUDENT and data[CLAIM_CONTEXT]["id"] == COURSE

    members = launch.get_nrps().get_members()          # 7 members, page size 3: pylti1p3 follows Link next
    assert sorted(m["user_id"] for m in members) == sorted([TEACHER, STUDENT] + [f"S-{n + 2}" for n in range(5)])

    ags = launch.get_ags()
    grade = (Grade().set_score_given(17).set_score_maximum(20).set_activity_progress("Completed")
             .set_grading_progress("FullyGraded").set_user_id(STUDENT).set_comment("good")
             .set_timestamp(datetime.now(UTC).isoformat()))
    ags.put_grade(grade)                                # to the launch's own line item
    assert platform.gradebook(COURSE)[("Exam 1", STUDENT)]["scoreGiven"] == 17
    quiz = LineItem().set_tag("quiz-4").set_label("Quiz 4").set_score_maximum(10).set_resource_id("quiz-4")
    ags.put_grade(Grade().set_score_given(9).set_score_maximum(10).set_activity_progress("Completed")
                  .set_grading_progress("FullyGraded").set_user_id(STUDENT)
                  .set_timestamp(datetime.now(UTC).isoformat()), quiz)   # find_or_create_lineitem by tag
    assert platform.gradebook(COURSE)[("Quiz 4", STUDENT)]["scoreGiven"] == 9
    assert ags.find_lineitem_by_tag("quiz-4").get_label() == "Quiz 4"
    assert {r["userId"]: r["resultScore"] for r in ags.get_grades()} == {STUDENT: 17}
    # One token per scope set, each obtained with a fresh client assertion.
    assert [r.method for r in platform.requests if r.path == "/token"] == ["POST", "POST"]


def test_pylti1p3_accepts_aud_as_a_list(platform, tool_conf):
    platform.aud_as_list = True
    launch, fields = pylti_launch(platform, tool_conf)
    assert launch.get_launch_data()["aud"] == [platform.client_id]
    assert verify(platform, fields["id_token"])["azp"] == platform.client_id


def test_pylti1p3_deep_linking_round_trip(platform, tool_conf):
    launch, _fields = pylti_launch(platform, tool_conf, sub=TEACHER, message_type="LtiDeepLinkingRequest",
                                   resource_link_id=None)
    assert launch.is_deep_link_launch() and launch.check_teacher_access()
    resource = (DeepLinkResource().set_url(TOOL + "/exams/7").set_title("Exam 7").set_custom_params({"exam": "7"})
                .set_lineitem(LineItem().set_label("Exam 7").set_score_maximum(30).set_tag("exam")))
    action, fields = read_form(launch.get_deep_link().output_response_form([resource]))
    assert action == platform.deep_link_return_url
    status, _h, _page = http("POST", action, form=fields)
    assert status == 200
    (link,) = [v for k, v in platform.resource_links(COURSE).items() if k != "rl-exam"]
    assert link["title"] == "Exam 7" and link["custom"] == {"exam": "7"}
    assert platform.lineitems[link["lineitem"]]["scoreMaximum"] == 30
    # The teacher's new link launches for a student with its line item.
    student, _f = pylti_launch(platform, tool_conf, resource_link_id=link["id"], target_link_uri=TOOL + "/exams/7")
    assert student.get_launch_data()[CLAIM_AGS]["lineitem"] == link["lineitem"]


PYLTI_REFUSALS = {
    "alg_none": "Unable to find public key",
    "bad_signature": "Signature verification failed",
    "expired": "Signature has expired",
    "missing_claims": "Invalid message type",
    "no_nonce": '"nonce" is empty',
    "unknown_kid": "Unable to find public key",
    "wrong_aud": "[client_id=client-someone-else] not found",
    "wrong_deployment": "Unable to find deployment",
    "wrong_iss": "iss https://lms.elsewhere.example not found",
    "wrong_nonce": "Invalid Nonce",
}


@pytest.mark.parametrize("option", sorted(TAMPER_OPTIONS))
def test_pylti1p3_refuses_every_tampered_launch_for_the_reason_it_targets(platform, tool_conf, option):
    with pytest.raises(Exception) as exc:
        pylti_launch(platform, tool_conf, tamper={option})
    assert PYLTI_REFUSALS[option] in str(exc.value)


def test_pylti1p3_refuses_a_key_it_cannot_find_after_rotation_then_reads_the_new_jwks(platform, tool_conf):
    pylti_launch(platform, tool_conf)
    platform.rotate_keys()
    platform.drop_old_keys()
    launch, _f = pylti_launch(platform, tool_conf)      # a fresh MessageLaunch fetches the JWKS again
    assert launch.get_launch_data()["sub"] == STUDENT


def test_a_replayed_launch_is_refused_once_the_nonce_is_consumed(platform, tool_conf):
    browser = {}
    pylti_launch(platform, tool_conf, browser=browser)
    _redirect, fields = platform.replay_last_id_token()
    request = ToolRequest(fields, browser)
    with pytest.raises(Exception, match="Invalid Nonce"):
        ToolLaunch(request, tool_conf).validate()


def test_stock_pylti1p3_session_accepts_a_replay_in_the_same_browser(platform, tool_conf):
    """pylti1p3 2.0.0's SessionService.check_nonce only looks the nonce up and never removes it, so the same
    id_token posted twice in the same browser session validates twice: Aula's tool must consume nonces itself
    (NonceConsumingSession above shows the one-line fix). If this test starts failing, the library fixed it."""
    browser = {}
    pylti_launch(platform, tool_conf, browser=browser, session=SessionService)
    _redirect, fields = platform.replay_last_id_token()
    request = ToolRequest(fields, browser)
    ToolLaunch(request, tool_conf, SessionService(request)).validate()


# --- in a real browser: the LMS's launch page → the tool's login → /auth → the tool's launch ---------------------


class PyltiToolServer:
    """A minimal LTI tool over real HTTP, built on pylti1p3 (login + launch), with its session in a cookie."""

    def __init__(self, platform, tool_key):
        self.browsers: dict[str, dict] = {}
        tool = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                params = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                cookie = self.headers.get("Cookie", "")
                sid = dict(c.strip().split("=", 1) for c in cookie.split(";") if "=" in c).get("sid")
                if sid not in tool.browsers:
                    sid = "sid" + str(len(tool.browsers) + 1)
                    tool.browsers[sid] = {}
                request = ToolRequest(params, tool.browsers[sid])
                if self.path == "/lti/login":
                    location = ToolLogin(request, tool.conf).get_redirect_object(tool.launch_url).get_redirect_url()
                    self.send_response(302)
                    self.send_header("Location", location)
                    self.send_header("Set-Cookie", f"sid={sid}; Path=/; HttpOnly; SameSite=Lax")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                try:
                    data = ToolLaunch(request, tool.conf).validate().get_launch_data()
                    status, body = 200, f"<h1 id='hello'>Hello {data['name']}</h1>"
                except Exception as exc:
                    status, body = 403, f"<h1 id='refused'>Refused: {type(exc).__name__}</h1>"
                payload = f"<!doctype html><html><body>{body}</body></html>".encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.login_url, self.launch_url = origin + "/lti/login", origin + "/lti/launch"
        self.conf = ToolConfDict({platform.issuer: [{
            "default": True, "client_id": platform.client_id, "auth_login_url": platform.auth_url,
            "auth_token_url": platform.token_url, "key_set_url": platform.jwks_url,
            "deployment_ids": [platform.deployment_id]}]})
        self.conf.set_private_key(platform.issuer, tool_key.private_pem(), client_id=platform.client_id)
        self.conf.set_public_key(platform.issuer, tool_key.public_pem(), client_id=platform.client_id)
        platform.register_tool(login_url=self.login_url, launch_url=self.launch_url, redirect_uris=[self.launch_url],
                               jwks=self.conf.get_jwks)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.browser
def test_a_browser_launch_goes_through_the_auto_submitting_pages(platform, tool_key):
    from tests.e2e.browser import browser

    tool = PyltiToolServer(platform, tool_key)
    try:
        with browser() as b:
            page = b.new_page()
            page.set_default_timeout(15000)
            page.goto(platform.launch_page_url(sub=STUDENT, context_id=COURSE, target_link_uri=tool.launch_url,
                                               resource_link_id="rl-exam"))
            page.wait_for_selector("#hello")
            assert page.url == tool.launch_url and page.inner_text("#hello") == "Hello Sam Student"
            # The same browser, a tampered id_token: the tool refuses it.
            platform.auth_tamper = frozenset({"bad_signature"})
            page.goto(platform.launch_page_url(sub=STUDENT, context_id=COURSE, target_link_uri=tool.launch_url,
                                               resource_link_id="rl-exam"))
            page.wait_for_selector("#refused")
    finally:
        tool.close()
    paths = [(r.method, r.path.split("?")[0]) for r in platform.requests]
    assert paths.count(("GET", "/auth")) == 2 and paths.count(("GET", "/jwks")) == 2
    assert len(tool.browsers) == 1                        # one browser session across both launches
