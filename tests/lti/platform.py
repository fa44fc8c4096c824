"""A mock LMS (the *platform* side of LTI 1.3 / LTI Advantage) for the test suite.

It is a real HTTP server on 127.0.0.1 that speaks the IMS protocols the way Canvas or Moodle do, so Aula's tool
side is tested against signed JWTs, a JWKS, an OAuth2 token endpoint and the services, never against mocks:

- LTI Core 1.3 + Security Framework 1.0: third-party-initiated OIDC login (``login_initiation``), the OIDC
  authorization endpoint (``GET/POST /auth``) answering with an auto-submitting ``form_post`` of an RS256
  ``id_token`` (kid from ``/jwks``), OAuth2 ``client_credentials`` with a JWT client assertion (``POST /token``,
  RFC 7523: iss = sub = client_id, aud = token URL, exp, iat, single-use jti, signature checked against the
  tool's JWKS).
- Deep Linking 2.0: ``LtiDeepLinkingRequest`` launches carry ``deep_linking_settings``; ``POST
  /deep_link_return`` verifies the tool's ``LtiDeepLinkingResponse`` and places the resource links (and their
  line items) in the course.
- Names and Role Provisioning Services 2.0: ``GET /api/contexts/<c>/memberships`` (paged by ``Link: rel="next"``,
  ``role``, ``limit`` and ``rlid`` parameters; no ``differences`` link, no per-member ``message`` section).
- Assignment and Grade Services 2.0: line item container (GET with ``resource_link_id``/``resource_id``/``tag``
  filters, POST), line item (GET/PUT/DELETE), ``/scores`` (POST, validated; a score whose timestamp is not newer
  than the stored one for that user is ignored) and ``/results`` (GET).

Every service call needs a bearer token from ``/token`` holding the right scope, checked on every call.
``authorize(..., tamper=...)`` and ``auth_tamper`` forge the classic attacks (bad signature, wrong audience,
expired token, unknown key, alg none, ...); ``replay_last_id_token`` replays a launch; ``fail_next`` makes the
next calls under a path fail. Everything received is kept for inspection (``requests``, ``lineitems``,
``gradebook``, ``deep_links``). ``launch_page_url`` gives a page that starts a launch in a browser.

Spec references: https://www.imsglobal.org/spec/lti/v1p3/ (Core), https://www.imsglobal.org/spec/security/v1p0/
(Security Framework), https://www.imsglobal.org/spec/lti-dl/v2p0, https://www.imsglobal.org/spec/lti-nrps/v2p0,
https://www.imsglobal.org/spec/lti-ags/v2p0.

URLs the platform hands out are all lower case: pylti1p3 lower-cases the ``Link`` header before reading the
next-page URL (service_connector.py), so upper-case path segments would break paging for a real tool.

Thread note: the HTTP server answers on its own threads. When the tool's JWKS is given as a callable it is called
on such a thread, whose database connection (closed again after the call) sees committed rows only: in a test
inside a transaction (pytest-django ``db``), give a dict snapshot, or a callable returning data built in the test.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

# --- vocabulary -------------------------------------------------------------------------------------------------

LTI = "https://purl.imsglobal.org/spec/lti/claim/"
CLAIM_MESSAGE_TYPE = LTI + "message_type"
CLAIM_VERSION = LTI + "version"
CLAIM_DEPLOYMENT_ID = LTI + "deployment_id"
CLAIM_TARGET_LINK_URI = LTI + "target_link_uri"
CLAIM_RESOURCE_LINK = LTI + "resource_link"
CLAIM_ROLES = LTI + "roles"
CLAIM_CONTEXT = LTI + "context"
CLAIM_TOOL_PLATFORM = LTI + "tool_platform"
CLAIM_LAUNCH_PRESENTATION = LTI + "launch_presentation"
CLAIM_CUSTOM = LTI + "custom"
CLAIM_LIS = LTI + "lis"
DL = "https://purl.imsglobal.org/spec/lti-dl/claim/"
CLAIM_DL_SETTINGS = DL + "deep_linking_settings"
CLAIM_DL_CONTENT_ITEMS = DL + "content_items"
CLAIM_DL_DATA = DL + "data"
CLAIM_DL_MSG = DL + "msg"
CLAIM_DL_LOG = DL + "log"
CLAIM_DL_ERRORMSG = DL + "errormsg"
CLAIM_DL_ERRORLOG = DL + "errorlog"
CLAIM_NRPS = "https://purl.imsglobal.org/spec/lti-nrps/claim/namesroleservice"
CLAIM_AGS = "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint"

SCOPE_NRPS = "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly"
SCOPE_LINEITEM = "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem"
SCOPE_LINEITEM_READONLY = "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem.readonly"
SCOPE_RESULT_READONLY = "https://purl.imsglobal.org/spec/lti-ags/scope/result.readonly"
SCOPE_SCORE = "https://purl.imsglobal.org/spec/lti-ags/scope/score"
AGS_SCOPES = [SCOPE_LINEITEM, SCOPE_LINEITEM_READONLY, SCOPE_RESULT_READONLY, SCOPE_SCORE]
ALL_SCOPES = frozenset([SCOPE_NRPS, *AGS_SCOPES])

ROLE_LEARNER = "http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"
ROLE_INSTRUCTOR = "http://purl.imsglobal.org/vocab/lis/v2/membership#Instructor"
ROLE_TA = "http://purl.imsglobal.org/vocab/lis/v2/membership/Instructor#TeachingAssistant"
ROLE_CONTENT_DEVELOPER = "http://purl.imsglobal.org/vocab/lis/v2/membership#ContentDeveloper"
ROLE_MENTOR = "http://purl.imsglobal.org/vocab/lis/v2/membership#Mentor"
CONTEXT_TYPE_COURSE = "http://purl.imsglobal.org/vocab/lis/v2/course#CourseOffering"

MEDIA_NRPS = "application/vnd.ims.lti-nrps.v2.membershipcontainer+json"
MEDIA_LINEITEMS = "application/vnd.ims.lis.v2.lineitemcontainer+json"
MEDIA_LINEITEM = "application/vnd.ims.lis.v2.lineitem+json"
MEDIA_SCORE = "application/vnd.ims.lis.v1.score+json"
MEDIA_RESULTS = "application/vnd.ims.lis.v2.resultcontainer+json"

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ACTIVITY_PROGRESS = frozenset({"Initialized", "Started", "InProgress", "Submitted", "Completed"})
GRADING_PROGRESS = frozenset({"FullyGraded", "Pending", "PendingManual", "Failed", "NotReady"})

TAMPER_OPTIONS = frozenset({
    "bad_signature",     # signed by a key that is not in the JWKS, under the published kid
    "wrong_aud",         # aud is another client's id
    "expired",           # exp (and iat) in the past
    "wrong_iss",         # iss is another platform
    "wrong_deployment",  # a deployment id the tool was never given
    "unknown_kid",       # signed by a key whose kid is not in the JWKS
    "no_nonce",          # the nonce claim is dropped
    "wrong_nonce",       # a nonce the tool never issued
    "missing_claims",    # message_type, version, roles and resource_link / deep_linking_settings dropped
    "alg_none",          # unsigned token, header alg "none"
})
# What "missing_claims" drops (the required LTI claims whose absence a tool must refuse).
MISSING_CLAIMS = (CLAIM_MESSAGE_TYPE, CLAIM_VERSION, CLAIM_ROLES, CLAIM_RESOURCE_LINK, CLAIM_DL_SETTINGS)

ID_TOKEN_LIFETIME = 300
LEEWAY = 5


class PlatformError(Exception):
    """A refusal by the platform: an OAuth2/OIDC error code, a description and the HTTP status it maps to."""

    def __init__(self, error: str, description: str = "", status: int = 400):
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description
        self.status = status


class Request(NamedTuple):
    method: str
    path: str           # the request target, query string included
    headers: dict       # Authorization and Cookie values masked
    body: Any           # parsed form (dict) or JSON when it parses, else text; client assertions masked


@dataclass
class RsaKey:
    """An RSA signing key with a kid: the platform's keys, and in tests the tool's (see client_assertion)."""

    kid: str
    private: rsa.RSAPrivateKey

    @classmethod
    def new(cls, kid: str | None = None) -> RsaKey:
        return cls(kid=kid or secrets.token_hex(8),
                   private=rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def public_jwk(self) -> dict:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "alg": "RS256", "use": "sig"}

    def jwks(self) -> dict:
        return {"keys": [self.public_jwk()]}

    def private_pem(self) -> str:
        return self.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()).decode()

    def public_pem(self) -> str:
        return self.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def sign(self, claims: dict, *, kid: str | None = None) -> str:
        return jwt.encode(claims, self.private, algorithm="RS256", headers={"kid": kid or self.kid})


@dataclass
class _Tool:
    login_url: str
    launch_url: str
    redirect_uris: list[str]
    jwks_url: str | None = None
    jwks: dict | Callable[[], dict] | None = None
    deep_link_url: str | None = None
    scopes: frozenset[str] = ALL_SCOPES


@dataclass
class _Context:
    context_id: str
    key: str              # lower-case path segment
    title: str
    label: str
    sourced_id: str | None = None
    members: dict = field(default_factory=dict)         # sub -> {"roles": [...], "status": "Active"|"Inactive"}
    links: dict = field(default_factory=dict)           # resource link id -> link dict


def _close_thread_db_connections() -> None:
    """A JWKS callable that reads Django's database opens a connection on the server's thread (it sees committed
    rows only); close it so it does not outlive the request (Django's connections are per thread)."""
    import sys

    if "django.db" in sys.modules:
        from django.db import connections

        connections.close_all()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _now() -> int:
    return int(time.time())


def _parse_timestamp(value: Any) -> datetime:
    if not isinstance(value, str):
        raise PlatformError("invalid_request", "timestamp must be an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise PlatformError("invalid_request", "timestamp is not ISO 8601")
    if parsed.tzinfo is None:
        raise PlatformError("invalid_request", "timestamp needs a time zone offset")
    return parsed


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _role_matches(role: str, wanted: str) -> bool:
    """NRPS `role` filter: a full URI or a short name (Learner), compared case-insensitively (pylti1p3 lower-cases
    next-page links, so a filter value can come back lower-cased)."""
    role, wanted = role.lower(), wanted.lower()
    return role == wanted or role.rsplit("#", 1)[-1] == wanted.rsplit("#", 1)[-1]


class MockPlatform:
    """A mock LMS serving LTI 1.3 / LTI Advantage over HTTP on 127.0.0.1 (see the module docstring)."""

    def __init__(self, *, page_size: int = 50, name: str = "Mock LMS"):
        self.page_size = page_size
        self.name = name
        self.client_id = "client-" + secrets.token_hex(6)
        self.deployment_id = "1"
        self.guid = "platform-" + secrets.token_hex(6)
        self.token_lifetime = 3600
        self.auth_tamper: frozenset[str] = frozenset()     # applied to every HTTP /auth answer
        self.aud_as_list = False                           # id_token aud as [client_id] (with azp), as some LMSs do
        self.requests: list[Request] = []
        self.lineitems: dict[str, dict] = {}               # id (URL) -> line item JSON + "scores": {sub: score}
        self.ignored_scores: list[dict] = []               # scores dropped as not newer than the stored one
        self.deep_links: dict[str, list[dict]] = {}        # context_id -> content items received
        self.deep_link_messages: list[dict] = []           # msg/log/errormsg/errorlog claims of DL responses
        self.returns: list[dict] = []                      # launch_presentation return_url visits (query params)
        self.server_errors: list[str] = []                 # unexpected exceptions in the mock itself (a bug here)
        self.tool: _Tool | None = None
        self.users: dict[str, dict] = {}
        self.contexts: dict[str, _Context] = {}
        self.last_launch: dict | None = None               # {"redirect_uri", "form", "claims" (untampered), "tamper"}
        self._keys: list[RsaKey] = [RsaKey.new()]              # newest first; [0] signs
        self._lock = threading.RLock()
        self._hints: dict[str, dict] = {}                  # lti_message_hint -> pending launch
        self._launch_pages: dict[str, tuple[str, dict]] = {}   # /launch/<token> -> (tool login url, params)
        self._dl_data: dict[str, dict] = {}                # deep linking `data` -> {"context_id", "sub"}
        self._tokens: dict[str, dict] = {}                 # access token -> {"scopes", "expires_at"}
        self._used_jtis: dict[str, int] = {}               # client assertion jti -> exp
        self._used_dl_nonces: set[str] = set()
        self._failures: list[list] = []                    # [path prefix, remaining, status, retry_after]
        self._lineitem_seq = 0
        self._lineitem_context: dict[str, str] = {}        # line item URL -> context_id
        self._link_seq = 0
        self._registration_tokens: set[str] = set()
        self.dynamic_registrations: list[dict] = []        # client metadata received by /register

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.auth_url = self.issuer + "/auth"
        self.token_url = self.issuer + "/token"
        self.jwks_url = self.issuer + "/jwks"
        self.deep_link_return_url = self.issuer + "/deep_link_return"
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"mock-lms-{self.port}",
                                        daemon=True)
        self._thread.start()

    # --- lifecycle ----------------------------------------------------------------------------------------------

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> MockPlatform:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- keys ---------------------------------------------------------------------------------------------------

    @property
    def kid(self) -> str:
        """The kid that signs id_tokens now."""
        return self._keys[0].kid

    def jwks(self) -> dict:
        with self._lock:
            return {"keys": [key.public_jwk() for key in self._keys]}

    def rotate_keys(self) -> str:
        """A new key signs from now on; the previous ones stay in the JWKS until drop_old_keys()."""
        with self._lock:
            self._keys.insert(0, RsaKey.new())
            return self._keys[0].kid

    def drop_old_keys(self) -> None:
        with self._lock:
            del self._keys[1:]

    # --- registration, roster, courses --------------------------------------------------------------------------

    def register_tool(self, *, login_url: str, launch_url: str, redirect_uris: list[str],
                      jwks_url: str | None = None, jwks: dict | Callable[[], dict] | None = None,
                      deep_link_url: str | None = None, scopes: frozenset[str] | None = None) -> None:
        """Register the tool (one per platform; registering again replaces it). The tool's public keys come from
        jwks_url (fetched over HTTP at each verification) or jwks (a dict, or a zero-arg callable returning one)."""
        if not (jwks_url or jwks):
            raise ValueError("the tool needs a jwks_url or jwks")
        with self._lock:
            self.tool = _Tool(login_url=login_url, launch_url=launch_url, redirect_uris=list(redirect_uris),
                              jwks_url=jwks_url, jwks=jwks, deep_link_url=deep_link_url,
                              scopes=frozenset(scopes) if scopes is not None else ALL_SCOPES)

    # --- dynamic registration (LTI Dynamic Registration 1.0) ---------------------------------------------------

    def registration_start(self) -> dict:
        """What the LMS admin's "add a tool by URL" does: the query it opens the tool's registration URL with
        (`openid_configuration`, a single-use `registration_token`)."""
        token = "reg-" + secrets.token_urlsafe(16)
        with self._lock:
            self._registration_tokens.add(token)
        return {"openid_configuration": self.issuer + "/.well-known/openid-configuration",
                "registration_token": token}

    def openid_configuration(self) -> dict:
        return {
            "issuer": self.issuer, "authorization_endpoint": self.auth_url, "token_endpoint": self.token_url,
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS256"], "jwks_uri": self.jwks_url,
            "registration_endpoint": self.issuer + "/register", "scopes_supported": ["openid", *sorted(ALL_SCOPES)],
            "response_types_supported": ["id_token"], "subject_types_supported": ["public", "pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"], "claims_supported": ["sub", "iss", "name", "email"],
            "https://purl.imsglobal.org/spec/lti-platform-configuration": {
                "product_family_code": "aula-mock-lms", "version": "1.0",
                "messages_supported": [{"type": "LtiResourceLinkRequest"}, {"type": "LtiDeepLinkingRequest"}],
                "variables": ["User.id", "Context.id"]},
        }

    def register_dynamically(self, authorization: str, body: Any) -> dict:
        """The registration endpoint (Dynamic Registration 1.0 section 3.5): validates the tool's client metadata
        and registers it (its JWKS fetched from `jwks_uri`); answers with the client id and deployment id."""
        token = authorization[7:] if authorization.startswith("Bearer ") else ""
        with self._lock:
            if token not in self._registration_tokens:
                raise PlatformError("invalid_token", "registration token missing, wrong or used", 401)
            if not isinstance(body, dict):
                raise PlatformError("invalid_client_metadata", "a JSON object is required")
            config = body.get("https://purl.imsglobal.org/spec/lti-tool-configuration") or {}
            missing = [k for k in ("initiate_login_uri", "redirect_uris", "jwks_uri", "client_name")
                       if not body.get(k)]
            if missing or not config.get("target_link_uri") or not config.get("domain"):
                raise PlatformError("invalid_client_metadata", f"missing {missing or 'lti-tool-configuration'}")
            if body.get("token_endpoint_auth_method") != "private_key_jwt" or \
                    body.get("response_types") != ["id_token"] or \
                    set(body.get("grant_types") or []) != {"implicit", "client_credentials"}:
                raise PlatformError("invalid_client_metadata", "LTI needs id_token, implicit + client_credentials, "
                                                               "private_key_jwt")
            self._registration_tokens.discard(token)
            scopes = frozenset(s for s in (body.get("scope") or "").split() if s in ALL_SCOPES)
            deep_link = next((m.get("target_link_uri") or config["target_link_uri"]
                              for m in config.get("messages") or [] if m.get("type") == "LtiDeepLinkingRequest"),
                             None)
            self.register_tool(login_url=body["initiate_login_uri"], launch_url=config["target_link_uri"],
                               redirect_uris=list(body["redirect_uris"]), jwks_url=body["jwks_uri"],
                               deep_link_url=deep_link, scopes=scopes)
            self.dynamic_registrations.append(body)
            return {**body, "client_id": self.client_id,
                    "https://purl.imsglobal.org/spec/lti-tool-configuration": {
                        **config, "deployment_id": self.deployment_id}}

    def add_user(self, sub: str, *, name: str, given_name: str = "", family_name: str = "", email: str = "",
                 picture: str | None = None, sourced_id: str | None = None) -> None:
        """A person as the LMS knows them; sourced_id is their SIS (OneRoster) sourcedId when the LMS has one, sent
        as lis.person_sourcedid in launches and lis_person_sourcedid in NRPS."""
        with self._lock:
            self.users[sub] = {"name": name, "given_name": given_name, "family_name": family_name,
                               "email": email, "picture": picture, "sourced_id": sourced_id}

    def add_context(self, context_id: str, *, title: str, label: str = "", sourced_id: str | None = None) -> None:
        """A course; sourced_id is the SIS class sourcedId (lis.course_section_sourcedid in launches)."""
        with self._lock:
            if context_id in self.contexts:
                ctx = self.contexts[context_id]
                ctx.title, ctx.label, ctx.sourced_id = title, label, sourced_id
                return
            self.contexts[context_id] = _Context(context_id=context_id, key=f"c{len(self.contexts) + 1}",
                                                 title=title, label=label, sourced_id=sourced_id)
            self.deep_links.setdefault(context_id, [])

    def enroll(self, context_id: str, sub: str, roles: list[str]) -> None:
        """Enroll (or change the roles of) a user; full LIS role URIs."""
        with self._lock:
            ctx = self._context(context_id)
            if sub not in self.users:
                raise KeyError(f"unknown user {sub!r}: add_user first")
            ctx.members[sub] = {"roles": list(roles), "status": "Active"}

    def unenroll(self, context_id: str, sub: str, *, inactive: bool = False) -> None:
        """Remove a user from the course (NRPS omits them), or with inactive=True keep them as status Inactive."""
        with self._lock:
            ctx = self._context(context_id)
            if inactive:
                ctx.members[sub]["status"] = "Inactive"
            else:
                ctx.members.pop(sub, None)

    def add_resource_link(self, context_id: str, link_id: str, *, title: str, url: str | None = None,
                          custom: dict | None = None, line_item: dict | None = None) -> dict:
        """Place a resource link in a course (what a deep link creates). line_item: {"label", "scoreMaximum",
        optional "tag", "resourceId"} creates the link's line item (its URL goes in the AGS claim `lineitem`)."""
        with self._lock:
            ctx = self._context(context_id)
            link = {"id": link_id, "title": title, "url": url, "custom": dict(custom or {}), "lineitem": None}
            ctx.links[link_id] = link
            if line_item is not None:
                item = self._lineitem_create(ctx, {**line_item, "resourceLinkId": link_id})
                link["lineitem"] = item["id"]
            return link

    def resource_links(self, context_id: str) -> dict[str, dict]:
        """The course's resource links (link id -> {"id", "title", "url", "custom", "lineitem"}), in order."""
        with self._lock:
            return {k: dict(v) for k, v in self._context(context_id).links.items()}

    def _context(self, context_id: str) -> _Context:
        try:
            return self.contexts[context_id]
        except KeyError:
            raise KeyError(f"unknown context {context_id!r}: add_context first")

    def _context_by_key(self, key: str) -> _Context:
        for ctx in self.contexts.values():
            if ctx.key == key:
                return ctx
        raise PlatformError("not_found", "no such context", 404)

    # --- launch step 1: third-party-initiated login -------------------------------------------------------------

    def login_initiation(self, *, sub: str, context_id: str, target_link_uri: str,
                         message_type: str = "LtiResourceLinkRequest",
                         resource_link_id: str | None = None) -> tuple[str, dict]:
        """The LMS's login request to the tool's login_url: (url, params). Params: iss, login_hint,
        target_link_uri, lti_message_hint, client_id, lti_deployment_id. A resource link launch needs
        resource_link_id; a link id the course does not have yet is placed there (title = id)."""
        with self._lock:
            tool = self._registered_tool()
            ctx = self._context(context_id)
            if sub not in self.users:
                raise KeyError(f"unknown user {sub!r}: add_user first")
            if message_type == "LtiResourceLinkRequest":
                if not resource_link_id:
                    raise ValueError("a resource link launch needs resource_link_id")
                if resource_link_id not in ctx.links:
                    self.add_resource_link(context_id, resource_link_id, title=resource_link_id, url=target_link_uri)
            elif message_type != "LtiDeepLinkingRequest":
                raise ValueError(f"unsupported message type {message_type!r}")
            message_hint = secrets.token_urlsafe(16)
            login_hint = secrets.token_urlsafe(12)
            self._hints[message_hint] = {"login_hint": login_hint, "sub": sub, "context_id": context_id,
                                         "message_type": message_type, "resource_link_id": resource_link_id,
                                         "target_link_uri": target_link_uri}
            params = {"iss": self.issuer, "login_hint": login_hint, "target_link_uri": target_link_uri,
                      "lti_message_hint": message_hint, "client_id": self.client_id,
                      "lti_deployment_id": self.deployment_id}
            return tool.login_url, params

    def launch_page_url(self, **initiation) -> str:
        """A page of the LMS that starts a launch in a browser: it POSTs the login initiation (the arguments of
        login_initiation) to the tool's login_url as soon as it loads. For Playwright tests."""
        url, params = self.login_initiation(**initiation)
        token = secrets.token_hex(12)
        with self._lock:
            self._launch_pages[token] = (url, params)
        return f"{self.issuer}/launch/{token}"

    def _registered_tool(self) -> _Tool:
        if self.tool is None:
            raise PlatformError("unauthorized_client", "no tool registered")
        return self.tool

    # --- launch step 2: the OIDC authorization endpoint ---------------------------------------------------------

    def authorize(self, query: dict, *, tamper: frozenset[str] = frozenset()) -> tuple[str, dict]:
        """Answer the tool's authentication request (OIDC implicit flow, LTI Security Framework 5.1.1.2).
        Returns (redirect_uri, {"id_token", "state"}) to be POSTed to redirect_uri; raises PlatformError."""
        unknown = set(tamper) - TAMPER_OPTIONS
        if unknown:
            raise ValueError(f"unknown tamper options {sorted(unknown)}")
        query = {k: (v[0] if isinstance(v, list) else v) for k, v in query.items()}
        with self._lock:
            tool = self._registered_tool()
            redirect_uri = query.get("redirect_uri", "")
            if redirect_uri not in tool.redirect_uris:
                raise PlatformError("invalid_request", "redirect_uri is not registered for this tool")
            if query.get("client_id") != self.client_id:
                raise PlatformError("unauthorized_client", "unknown client_id")
            if "openid" not in query.get("scope", "").split():
                raise PlatformError("invalid_scope", "scope must include openid")
            if query.get("response_type") != "id_token":
                raise PlatformError("unsupported_response_type", "response_type must be id_token")
            if query.get("response_mode") != "form_post":
                raise PlatformError("invalid_request", "response_mode must be form_post")
            if query.get("prompt") != "none":
                raise PlatformError("invalid_request", "prompt must be none")
            if not query.get("nonce"):
                raise PlatformError("invalid_request", "nonce is required")
            pending = self._hints.get(query.get("lti_message_hint", ""))
            if pending is None or pending["login_hint"] != query.get("login_hint"):
                raise PlatformError("login_required", "login_hint / lti_message_hint were not issued by this platform")
            claims = self._launch_claims(pending, nonce=query["nonce"])
            token = self._sign_id_token(claims, tamper)
            form = {"id_token": token}
            if "state" in query:
                form["state"] = query["state"]
            self.last_launch = {"redirect_uri": redirect_uri, "form": dict(form), "claims": claims,
                                "tamper": frozenset(tamper)}
            return redirect_uri, form

    def replay_last_id_token(self) -> tuple[str, dict]:
        """The last id_token and state again, unchanged (a replayed nonce)."""
        with self._lock:
            if self.last_launch is None:
                raise RuntimeError("no launch yet")
            return self.last_launch["redirect_uri"], dict(self.last_launch["form"])

    def _launch_claims(self, pending: dict, *, nonce: str) -> dict:
        ctx = self._context(pending["context_id"])
        sub = pending["sub"]
        user = self.users[sub]
        member = ctx.members.get(sub)
        roles = list(member["roles"]) if member and member["status"] == "Active" else []
        now = _now()
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": [self.client_id] if self.aud_as_list else self.client_id,
            "azp": self.client_id,
            "sub": sub,
            "iat": now,
            "exp": now + ID_TOKEN_LIFETIME,
            "nonce": nonce,
            "name": user["name"],
            "given_name": user["given_name"],
            "family_name": user["family_name"],
            "email": user["email"],
            CLAIM_MESSAGE_TYPE: pending["message_type"],
            CLAIM_VERSION: "1.3.0",
            CLAIM_DEPLOYMENT_ID: self.deployment_id,
            CLAIM_TARGET_LINK_URI: pending["target_link_uri"],
            CLAIM_ROLES: roles,
            CLAIM_CONTEXT: {"id": ctx.context_id, "label": ctx.label, "title": ctx.title,
                            "type": [CONTEXT_TYPE_COURSE]},
            CLAIM_TOOL_PLATFORM: {"guid": self.guid, "name": self.name, "product_family_code": "aula-mock-lms",
                                  "version": "1.0"},
            CLAIM_LAUNCH_PRESENTATION: {"document_target": "iframe", "locale": "en-US",
                                        "return_url": f"{self.issuer}/courses/{ctx.key}/return"},
            CLAIM_NRPS: {"context_memberships_url": f"{self.issuer}/api/contexts/{ctx.key}/memberships",
                         "service_versions": ["2.0"]},
        }
        if user["picture"]:
            claims["picture"] = user["picture"]
        lis = {"person_sourcedid": user["sourced_id"], "course_section_sourcedid": ctx.sourced_id}
        if any(lis.values()):
            claims[CLAIM_LIS] = {k: v for k, v in lis.items() if v}
        ags_scopes = [s for s in AGS_SCOPES if s in self._registered_tool().scopes]
        if ags_scopes:
            claims[CLAIM_AGS] = {"scope": ags_scopes, "lineitems": f"{self.issuer}/api/contexts/{ctx.key}/line_items"}
        if pending["message_type"] == "LtiResourceLinkRequest":
            link = ctx.links[pending["resource_link_id"]]
            claims[CLAIM_RESOURCE_LINK] = {"id": link["id"], "title": link["title"]}
            claims[CLAIM_CUSTOM] = self._substitute(link["custom"], sub=sub, ctx=ctx, link=link)
            if link["lineitem"] and CLAIM_AGS in claims:
                claims[CLAIM_AGS]["lineitem"] = link["lineitem"]
        else:
            data = secrets.token_urlsafe(12)
            self._dl_data[data] = {"context_id": ctx.context_id, "sub": sub}
            claims[CLAIM_DL_SETTINGS] = {
                "deep_link_return_url": self.deep_link_return_url,
                "accept_types": ["ltiResourceLink"],
                "accept_presentation_document_targets": ["iframe", "window"],
                "accept_multiple": True,
                "auto_create": True,
                "title": ctx.title,
                "data": data,
            }
        return claims

    def _substitute(self, custom: dict, *, sub: str, ctx: _Context, link: dict) -> dict:
        """LTI custom parameter substitution for the variables the mock knows (LTI Core appendix)."""
        values = {"$User.id": sub, "$Context.id": ctx.context_id, "$ResourceLink.id": link["id"],
                  "$Person.email.primary": self.users[sub]["email"], "$ResourceLink.title": link["title"]}
        return {k: values.get(v, v) if isinstance(v, str) else v for k, v in custom.items()}

    def _sign_id_token(self, claims: dict, tamper: frozenset[str]) -> str:
        claims = dict(claims)
        if "wrong_aud" in tamper:
            claims["aud"] = claims["azp"] = "client-someone-else"
        if "expired" in tamper:
            claims["iat"] = _now() - 2 * ID_TOKEN_LIFETIME - 60
            claims["exp"] = _now() - ID_TOKEN_LIFETIME - 60
        if "wrong_iss" in tamper:
            claims["iss"] = "https://lms.elsewhere.example"
        if "wrong_deployment" in tamper:
            claims[CLAIM_DEPLOYMENT_ID] = "deployment-never-issued"
        if "no_nonce" in tamper:
            claims.pop("nonce", None)
        if "wrong_nonce" in tamper:
            claims["nonce"] = "nonce-" + secrets.token_hex(8)
        if "missing_claims" in tamper:
            for name in MISSING_CLAIMS:
                claims.pop(name, None)
        if "alg_none" in tamper:
            header = {"alg": "none", "typ": "JWT", "kid": self.kid}
            return ".".join([_b64url(json.dumps(header).encode()), _b64url(json.dumps(claims).encode()), ""])
        key, kid = self._keys[0].private, self._keys[0].kid
        if "bad_signature" in tamper:
            key = RsaKey.new().private
        if "unknown_kid" in tamper:
            stranger = RsaKey.new()
            key, kid = stranger.private, stranger.kid
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})

    # --- the tool's keys ----------------------------------------------------------------------------------------

    def _tool_jwks(self) -> dict:
        tool = self._registered_tool()
        if callable(tool.jwks):
            try:
                return tool.jwks()
            finally:
                _close_thread_db_connections()
        if tool.jwks is not None:
            return tool.jwks
        try:
            with urllib.request.urlopen(tool.jwks_url, timeout=10) as resp:  # noqa: S310 (a test server)
                return json.loads(resp.read())
        except (urllib.error.URLError, ValueError) as exc:
            raise PlatformError("invalid_client", f"cannot read the tool's JWKS: {exc}", 401)

    def _verify_tool_jwt(self, token: str, *, audience: str, error: str, status: int,
                         required: list[str]) -> dict:
        """Verify a JWT signed by the tool: RS256 only, key by kid from the tool's JWKS (fetched outside the
        state lock), iss = client_id, aud contains `audience`, exp/iat checked."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise PlatformError(error, f"malformed JWT: {exc}", status)
        if header.get("alg") != "RS256":
            raise PlatformError(error, "the JWT must be signed with RS256", status)
        keys = [k for k in self._tool_jwks().get("keys", []) if k.get("kty") == "RSA"]
        kid = header.get("kid")
        if kid is not None:
            keys = [k for k in keys if k.get("kid") == kid]
        if len(keys) != 1:
            raise PlatformError(error, "no tool key matches the JWT's kid", status)
        try:
            public = jwt.PyJWK(keys[0], algorithm="RS256").key
            return jwt.decode(token, public, algorithms=["RS256"], audience=audience, issuer=self.client_id,
                              leeway=LEEWAY, options={"require": required})
        except jwt.InvalidTokenError as exc:
            raise PlatformError(error, f"JWT rejected: {exc}", status)

    # --- token endpoint -----------------------------------------------------------------------------------------

    def issue_token(self, form: dict) -> dict:
        """OAuth2 client_credentials grant with a JWT client assertion (RFC 7523, LTI Security Framework 4.1)."""
        if form.get("grant_type") != "client_credentials":
            raise PlatformError("unsupported_grant_type", "grant_type must be client_credentials")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise PlatformError("invalid_client", "client_assertion_type must be jwt-bearer", 401)
        assertion = form.get("client_assertion")
        if not assertion:
            raise PlatformError("invalid_client", "client_assertion is required", 401)
        claims = self._verify_tool_jwt(assertion, audience=self.token_url, error="invalid_client", status=401,
                                       required=["iss", "sub", "aud", "exp", "iat", "jti"])
        if claims["sub"] != self.client_id:
            raise PlatformError("invalid_client", "sub must be the client_id", 401)
        with self._lock:
            now = _now()
            self._used_jtis = {j: exp for j, exp in self._used_jtis.items() if exp + LEEWAY >= now}
            if claims["jti"] in self._used_jtis:
                raise PlatformError("invalid_client", "jti already used", 401)
            self._used_jtis[claims["jti"]] = int(claims["exp"])
            requested = form.get("scope", "").split()
            granted = [s for s in requested if s in self._registered_tool().scopes]
            if not granted:
                raise PlatformError("invalid_scope", "none of the requested scopes is granted to this tool")
            token = secrets.token_urlsafe(24)
            self._tokens[token] = {"scopes": frozenset(granted), "expires_at": now + self.token_lifetime}
            return {"access_token": token, "token_type": "Bearer", "expires_in": self.token_lifetime,
                    "scope": " ".join(granted)}

    def expire_tokens(self) -> None:
        """Every access token issued so far expires now (the next service call gets 401)."""
        with self._lock:
            for info in self._tokens.values():
                info["expires_at"] = _now() - 1

    def _authorize_bearer(self, headers, any_of: set[str]) -> None:
        auth = headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        info = self._tokens.get(token) if scheme.lower() == "bearer" else None
        if info is None:
            raise PlatformError("invalid_token", "a bearer token from the token endpoint is required", 401)
        if info["expires_at"] < _now():
            raise PlatformError("invalid_token", "the access token has expired", 401)
        if not (info["scopes"] & any_of):
            raise PlatformError("insufficient_scope", f"needs one of {sorted(any_of)}", 403)

    # --- failure injection --------------------------------------------------------------------------------------

    def fail_next(self, path_prefix: str, count: int, status: int = 500, *, retry_after: int | None = None) -> None:
        """The next `count` requests whose path starts with path_prefix (a path like "/api/", or a full URL
        under the issuer) answer `status` (with a Retry-After header when given) before doing anything."""
        if path_prefix.startswith(self.issuer):
            path_prefix = path_prefix[len(self.issuer):] or "/"
        with self._lock:
            self._failures.append([path_prefix, count, status, retry_after])

    def _injected_failure(self, path: str) -> tuple[int, int | None] | None:
        with self._lock:
            for failure in self._failures:
                if failure[1] > 0 and path.startswith(failure[0]):
                    failure[1] -= 1
                    return failure[2], failure[3]
        return None

    # --- NRPS ---------------------------------------------------------------------------------------------------

    def memberships(self, key: str, params: dict) -> tuple[dict, str | None]:
        ctx = self._context_by_key(key)
        rlid = params.get("rlid")
        if rlid is not None and rlid.lower() not in {link_id.lower() for link_id in ctx.links}:
            # NRPS 2.0 resource link membership: every course member may open a link here, so the list is the
            # course's (without the optional per-member `message` section).
            raise PlatformError("not_found", "no such resource link in this context", 404)
        members = []
        for sub, m in ctx.members.items():
            if params.get("role") and not any(_role_matches(r, params["role"]) for r in m["roles"]):
                continue
            user = self.users[sub]
            member = {"user_id": sub, "roles": list(m["roles"]), "status": m["status"], "name": user["name"],
                      "given_name": user["given_name"], "family_name": user["family_name"], "email": user["email"]}
            if user["picture"]:
                member["picture"] = user["picture"]
            if user["sourced_id"]:
                member["lis_person_sourcedid"] = user["sourced_id"]
            members.append(member)
        limit = self._int_param(params, "limit", self.page_size)
        page = self._int_param(params, "page", 1)
        start = (page - 1) * limit
        url = f"{self.issuer}/api/contexts/{ctx.key}/memberships"
        body = {"id": url + ("?" + urlencode(params) if params else ""),
                "context": {"id": ctx.context_id, "label": ctx.label, "title": ctx.title},
                "members": members[start:start + limit]}
        next_url = None
        if start + limit < len(members):
            next_url = url + "?" + urlencode({**params, "page": page + 1, "limit": limit})
        return body, next_url

    @staticmethod
    def _int_param(params: dict, name: str, default: int) -> int:
        try:
            value = int(params.get(name, default))
        except ValueError:
            raise PlatformError("invalid_request", f"{name} must be an integer")
        if value < 1:
            raise PlatformError("invalid_request", f"{name} must be positive")
        return value

    # --- AGS ----------------------------------------------------------------------------------------------------

    def _lineitem_create(self, ctx: _Context, data: dict) -> dict:
        self._validate_lineitem(ctx, data)
        self._lineitem_seq += 1
        url = f"{self.issuer}/api/contexts/{ctx.key}/line_items/{self._lineitem_seq}"
        item = {k: v for k, v in data.items() if k not in {"id", "scores"}}
        item["id"] = url
        item["scores"] = {}
        self._lineitem_context[url] = ctx.context_id
        self.lineitems[url] = item
        return item

    def _validate_lineitem(self, ctx: _Context, data: Any) -> None:
        if not isinstance(data, dict):
            raise PlatformError("invalid_request", "a line item is a JSON object")
        if not isinstance(data.get("label"), str) or not data["label"].strip():
            raise PlatformError("invalid_request", "label is required")
        if not _is_number(data.get("scoreMaximum")) or data["scoreMaximum"] <= 0:
            raise PlatformError("invalid_request", "scoreMaximum must be a number > 0")
        link = data.get("resourceLinkId")
        if link is not None and link not in ctx.links:
            raise PlatformError("invalid_request", "resourceLinkId is not a link of this context")
        for name in ("startDateTime", "endDateTime"):
            if name in data:
                _parse_timestamp(data[name])

    @staticmethod
    def _public_lineitem(item: dict) -> dict:
        return {k: v for k, v in item.items() if k != "scores"}

    def _lineitem(self, key: str, number: str) -> tuple[_Context, dict]:
        ctx = self._context_by_key(key)
        item = self.lineitems.get(f"{self.issuer}/api/contexts/{key}/line_items/{number}")
        if item is None or self._lineitem_context.get(item["id"]) != ctx.context_id:
            raise PlatformError("not_found", "no such line item", 404)
        return ctx, item

    def lineitems_list(self, key: str, params: dict) -> tuple[list, str | None]:
        ctx = self._context_by_key(key)
        items = [i for url, i in self.lineitems.items() if self._lineitem_context[url] == ctx.context_id]
        for param, attr in (("resource_link_id", "resourceLinkId"), ("resource_id", "resourceId"), ("tag", "tag")):
            if param in params:
                items = [i for i in items if str(i.get(attr, "")).lower() == params[param].lower()]
        limit = self._int_param(params, "limit", self.page_size)
        page = self._int_param(params, "page", 1)
        start = (page - 1) * limit
        next_url = None
        if start + limit < len(items):
            next_url = (f"{self.issuer}/api/contexts/{key}/line_items?"
                        + urlencode({**params, "page": page + 1, "limit": limit}))
        return [self._public_lineitem(i) for i in items[start:start + limit]], next_url

    def lineitem_update(self, key: str, number: str, data: Any) -> dict:
        ctx, item = self._lineitem(key, number)
        if not isinstance(data, dict):
            raise PlatformError("invalid_request", "a line item is a JSON object")
        data = {**data, "resourceLinkId": item.get("resourceLinkId")}   # a tool may not move a line item
        if data["resourceLinkId"] is None:
            del data["resourceLinkId"]
        self._validate_lineitem(ctx, data)
        if data.get("id", item["id"]) != item["id"]:
            raise PlatformError("invalid_request", "id does not match the line item URL")
        kept = {"id": item["id"], "scores": item["scores"]}
        item.clear()
        item.update({k: v for k, v in data.items() if k not in kept})
        item.update(kept)
        return self._public_lineitem(item)

    def lineitem_delete(self, key: str, number: str) -> None:
        ctx, item = self._lineitem(key, number)
        del self.lineitems[item["id"]]
        for link in ctx.links.values():
            if link["lineitem"] == item["id"]:
                link["lineitem"] = None

    def score_post(self, key: str, number: str, score: Any) -> bool:
        """Validate and store a score (AGS 2.0 Score publish service). False when it was ignored because the
        stored score for that user has the same or a later timestamp."""
        ctx, item = self._lineitem(key, number)
        if not isinstance(score, dict):
            raise PlatformError("invalid_request", "a score is a JSON object")
        user_id = score.get("userId")
        if not isinstance(user_id, str) or not user_id:
            raise PlatformError("invalid_request", "userId is required")
        if user_id not in ctx.members:
            raise PlatformError("invalid_request", "userId is not a member of this context", 422)
        if score.get("activityProgress") not in ACTIVITY_PROGRESS:
            raise PlatformError("invalid_request", f"activityProgress must be one of {sorted(ACTIVITY_PROGRESS)}")
        if score.get("gradingProgress") not in GRADING_PROGRESS:
            raise PlatformError("invalid_request", f"gradingProgress must be one of {sorted(GRADING_PROGRESS)}")
        stamp = _parse_timestamp(score.get("timestamp"))
        if "scoreGiven" in score:
            if not _is_number(score["scoreGiven"]) or score["scoreGiven"] < 0:
                raise PlatformError("invalid_request", "scoreGiven must be a number >= 0")
            if not _is_number(score.get("scoreMaximum")) or score["scoreMaximum"] <= 0:
                raise PlatformError("invalid_request", "scoreMaximum (> 0) is required with scoreGiven")
        elif "scoreMaximum" in score and (not _is_number(score["scoreMaximum"]) or score["scoreMaximum"] <= 0):
            raise PlatformError("invalid_request", "scoreMaximum must be a number > 0")
        if "comment" in score and not isinstance(score["comment"], str):
            raise PlatformError("invalid_request", "comment must be a string")
        stored = item["scores"].get(user_id)
        if stored is not None and _parse_timestamp(stored["timestamp"]) >= stamp:
            self.ignored_scores.append({"lineitem": item["id"], **score})
            return False
        item["scores"][user_id] = dict(score)
        return True

    def results(self, key: str, number: str, params: dict) -> list:
        _ctx, item = self._lineitem(key, number)
        out = []
        for user_id, score in item["scores"].items():
            if params.get("user_id") and params["user_id"] != user_id:
                continue
            result = {"id": f"{item['id']}/results/{user_id}", "scoreOf": item["id"], "userId": user_id}
            if "scoreGiven" in score:
                # Scaled to the line item's maximum, as Canvas and Moodle report results.
                result["resultScore"] = score["scoreGiven"] * item["scoreMaximum"] / score["scoreMaximum"]
                result["resultMaximum"] = item["scoreMaximum"]
            if "comment" in score:
                result["comment"] = score["comment"]
            out.append(result)
        return out

    def gradebook(self, context_id: str) -> dict:
        """{(line item label, user sub): score JSON} for the course; a line item bound to a resource link is also
        reachable as (resourceLinkId, user sub)."""
        with self._lock:
            book = {}
            for url, item in self.lineitems.items():
                if self._lineitem_context[url] != context_id:
                    continue
                for sub, score in item["scores"].items():
                    book[(item["label"], sub)] = dict(score)
                    if item.get("resourceLinkId"):
                        book[(item["resourceLinkId"], sub)] = dict(score)
            return book

    # --- deep linking return ------------------------------------------------------------------------------------

    def receive_deep_link_response(self, token: str) -> list[str]:
        """Verify the tool's LtiDeepLinkingResponse (Deep Linking 2.0 section 4) and place its ltiResourceLink
        items in the course. Returns the ids of the resource links created; raises PlatformError."""
        claims = self._verify_tool_jwt(token, audience=self.issuer, error="invalid_request", status=400,
                                       required=["iss", "aud", "exp", "iat", "nonce"])
        with self._lock:
            if claims["nonce"] in self._used_dl_nonces:
                raise PlatformError("invalid_request", "nonce already used")
            if claims.get(CLAIM_DEPLOYMENT_ID) != self.deployment_id:
                raise PlatformError("invalid_request", "unknown deployment_id")
            if claims.get(CLAIM_MESSAGE_TYPE) != "LtiDeepLinkingResponse":
                raise PlatformError("invalid_request", "message_type must be LtiDeepLinkingResponse")
            if claims.get(CLAIM_VERSION) != "1.3.0":
                raise PlatformError("invalid_request", "version must be 1.3.0")
            request = self._dl_data.get(claims.get(CLAIM_DL_DATA))
            if request is None:
                raise PlatformError("invalid_request", "the data claim of the deep linking request was not echoed")
            items = claims.get(CLAIM_DL_CONTENT_ITEMS, [])
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise PlatformError("invalid_request", "content_items must be a list of objects")
            for item in items:
                if item.get("type") != "ltiResourceLink":
                    raise PlatformError("invalid_request", f"content item type {item.get('type')!r} not accepted")
                line_item = item.get("lineItem")
                if line_item is not None and (not isinstance(line_item, dict)
                                              or not _is_number(line_item.get("scoreMaximum"))
                                              or line_item["scoreMaximum"] <= 0):
                    raise PlatformError("invalid_request", "lineItem needs scoreMaximum > 0")
            self._used_dl_nonces.add(claims["nonce"])
            context_id = request["context_id"]
            created = []
            for item in items:
                self._link_seq += 1
                link_id = f"dl-{self._link_seq}"
                line_item = None
                if item.get("lineItem") is not None:
                    li = item["lineItem"]
                    line_item = {**{k: v for k, v in li.items() if k != "label"},
                                 "label": li.get("label") or item.get("title") or link_id}
                self.add_resource_link(context_id, link_id, title=item.get("title") or link_id, url=item.get("url"),
                                       custom=item.get("custom"), line_item=line_item)
                created.append(link_id)
            self.deep_links.setdefault(context_id, []).extend(items)
            messages = {k.rsplit("/", 1)[-1]: claims[k]
                        for k in (CLAIM_DL_MSG, CLAIM_DL_LOG, CLAIM_DL_ERRORMSG, CLAIM_DL_ERRORLOG) if k in claims}
            if messages:
                self.deep_link_messages.append({"context_id": context_id, **messages})
            return created

    # --- HTTP dispatch ------------------------------------------------------------------------------------------

    def _record(self, method: str, target: str, headers, body: Any) -> None:
        masked = {}
        for name, value in headers.items():
            if name.lower() == "authorization":
                value = value.split(" ", 1)[0] + " ***"
            elif name.lower() == "cookie":
                value = "***"
            masked[name] = value
        if isinstance(body, dict) and "client_assertion" in body:
            body = {**body, "client_assertion": "***"}
        with self._lock:
            self.requests.append(Request(method, target, masked, body))


_LINEITEMS = re.compile(r"^/api/contexts/(?P<key>c\d+)/line_items$")
_LINEITEM = re.compile(r"^/api/contexts/(?P<key>c\d+)/line_items/(?P<num>\d+)(?P<sub>/scores|/results)?$")
_MEMBERSHIPS = re.compile(r"^/api/contexts/(?P<key>c\d+)/memberships$")
_LAUNCH_PAGE = re.compile(r"^/launch/(?P<token>[0-9a-f]+)$")
_RETURN = re.compile(r"^/courses/(?P<key>c\d+)/return$")


def _handler_for(platform: MockPlatform):
    class Handler(_Handler):
        pass

    Handler.platform = platform
    return Handler


class _Handler(BaseHTTPRequestHandler):
    platform: MockPlatform
    protocol_version = "HTTP/1.1"
    server_version = "MockLMS/1.0"

    def log_message(self, format, *args):  # quiet
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # -- plumbing --

    def _dispatch(self, method: str) -> None:
        p = self.platform
        parts = urlsplit(self.path)
        path, params = parts.path, dict(parse_qsl(parts.query))
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        body: Any = raw.decode("utf-8", "replace") if raw else None
        if ctype == "application/x-www-form-urlencoded" and body is not None:
            body = dict(parse_qsl(body))
        elif raw:
            with contextlib.suppress(ValueError):
                body = json.loads(raw)
        p._record(method, self.path, dict(self.headers.items()), body)
        failure = p._injected_failure(path)
        if failure is not None:
            status, retry_after = failure
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            return self._json(status, {"error": "injected_failure", "error_description": f"injected {status}"},
                              headers=headers)
        try:
            self._route(method, path, params, ctype, body)
        except Exception as exc:  # noqa: BLE001 - the client gets a 500 and the test sees it in server_errors
            if not isinstance(exc, PlatformError):
                p.server_errors.append(f"{method} {path}: {type(exc).__name__}: {exc}")
                exc = PlatformError("server_error", "the mock platform failed (see server_errors)", 500)
            headers = {}
            if exc.status in (401, 403):
                headers["WWW-Authenticate"] = f'Bearer error="{exc.error}"'
            self._json(exc.status, {"error": exc.error, "error_description": exc.description}, headers=headers)

    def _route(self, method: str, path: str, params: dict, ctype: str, body: Any) -> None:
        p = self.platform
        if path == "/jwks" and method == "GET":
            return self._json(200, p.jwks())
        if path == "/.well-known/openid-configuration" and method == "GET":
            return self._json(200, p.openid_configuration())
        if path == "/register" and method == "POST":
            self._require_json(ctype, "application/json")
            return self._json(200, p.register_dynamically(self.headers.get("Authorization", ""), body))
        if path == "/auth" and method in ("GET", "POST"):
            query = params if method == "GET" else (body if isinstance(body, dict) else {})
            return self._auth(query)
        if path == "/token" and method == "POST":
            if not isinstance(body, dict):
                raise PlatformError("invalid_request", "the token request is form-encoded")
            return self._json(200, p.issue_token(body), headers={"Cache-Control": "no-store", "Pragma": "no-cache"})
        if path == "/deep_link_return" and method == "POST":
            token = body.get("JWT") if isinstance(body, dict) else None
            if not token:
                return self._html(400, "<h1>Deep linking failed</h1><p>No JWT form field.</p>")
            try:
                created = p.receive_deep_link_response(token)
            except PlatformError as exc:
                return self._html(400, f"<h1>Deep linking failed</h1><p>{html.escape(exc.description)}</p>")
            items = "".join(f"<li>{html.escape(link)}</li>" for link in created)
            return self._html(200, f"<h1>Content added</h1><ul id='created'>{items}</ul>")
        if (m := _LAUNCH_PAGE.match(path)) and method == "GET":
            page = p._launch_pages.get(m["token"])
            if page is None:
                raise PlatformError("not_found", "no such launch", 404)
            return self._html(200, autosubmit_form(*page))
        if (m := _RETURN.match(path)) and method == "GET":
            p.returns.append({"context_key": m["key"], **params})
            return self._html(200, "<h1>Back in the course</h1>")
        if m := _MEMBERSHIPS.match(path):
            if method != "GET":
                raise PlatformError("method_not_allowed", method, 405)
            with p._lock:
                p._authorize_bearer(self.headers, {SCOPE_NRPS})
                body_out, next_url = p.memberships(m["key"], params)
            headers = {"Link": f'<{next_url}>; rel="next"'} if next_url else {}
            return self._json(200, body_out, media=MEDIA_NRPS, headers=headers)
        if m := _LINEITEMS.match(path):
            with p._lock:
                if method == "GET":
                    p._authorize_bearer(self.headers, {SCOPE_LINEITEM, SCOPE_LINEITEM_READONLY})
                    items, next_url = p.lineitems_list(m["key"], params)
                    headers = {"Link": f'<{next_url}>; rel="next"'} if next_url else {}
                    return self._json(200, items, media=MEDIA_LINEITEMS, headers=headers)
                if method == "POST":
                    p._authorize_bearer(self.headers, {SCOPE_LINEITEM})
                    self._require_json(ctype, MEDIA_LINEITEM)
                    item = p._lineitem_create(p._context_by_key(m["key"]), body)
                    return self._json(201, p._public_lineitem(item), media=MEDIA_LINEITEM)
            raise PlatformError("method_not_allowed", method, 405)
        if m := _LINEITEM.match(path):
            with p._lock:
                return self._lineitem_route(method, m["key"], m["num"], m["sub"], params, ctype, body)
        raise PlatformError("not_found", path, 404)

    def _lineitem_route(self, method, key, num, sub, params, ctype, body) -> None:
        p = self.platform
        if sub == "/scores":
            if method != "POST":
                raise PlatformError("method_not_allowed", method, 405)
            p._authorize_bearer(self.headers, {SCOPE_SCORE})
            self._require_json(ctype, MEDIA_SCORE)
            p.score_post(key, num, body)
            return self._empty(204)
        if sub == "/results":
            if method != "GET":
                raise PlatformError("method_not_allowed", method, 405)
            p._authorize_bearer(self.headers, {SCOPE_RESULT_READONLY})
            return self._json(200, p.results(key, num, params), media=MEDIA_RESULTS)
        if method == "GET":
            p._authorize_bearer(self.headers, {SCOPE_LINEITEM, SCOPE_LINEITEM_READONLY})
            return self._json(200, p._public_lineitem(p._lineitem(key, num)[1]), media=MEDIA_LINEITEM)
        if method == "PUT":
            p._authorize_bearer(self.headers, {SCOPE_LINEITEM})
            self._require_json(ctype, MEDIA_LINEITEM)
            return self._json(200, p.lineitem_update(key, num, body), media=MEDIA_LINEITEM)
        if method == "DELETE":
            p._authorize_bearer(self.headers, {SCOPE_LINEITEM})
            p.lineitem_delete(key, num)
            return self._empty(204)
        raise PlatformError("method_not_allowed", method, 405)

    @staticmethod
    def _require_json(ctype: str, media: str) -> None:
        if ctype != media:
            raise PlatformError("unsupported_media_type", f"Content-Type must be {media}", 415)

    def _auth(self, query: dict) -> None:
        p = self.platform
        try:
            redirect_uri, form = p.authorize(query, tamper=p.auth_tamper)
        except PlatformError as exc:
            tool = p.tool
            uri = query.get("redirect_uri", "")
            if tool is None or uri not in tool.redirect_uris:
                return self._html(400, f"<h1>Launch refused</h1><p>{html.escape(str(exc))}</p>")
            # OIDC: once the redirect_uri is trusted, errors go back to it (form_post, with the state).
            form = {"error": exc.error, "error_description": exc.description}
            if "state" in query:
                form["state"] = query["state"]
            redirect_uri = uri
        return self._html(200, autosubmit_form(redirect_uri, form))

    def _send(self, status: int, payload: bytes, content_type: str | None, headers: dict | None = None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def _json(self, status: int, data: Any, *, media: str = "application/json", headers: dict | None = None):
        self._send(status, json.dumps(data).encode(), media, headers)

    def _html(self, status: int, body: str) -> None:
        page = f"<!doctype html><html><head><meta charset='utf-8'><title>Mock LMS</title></head><body>{body}</body></html>"
        self._send(status, page.encode(), "text/html; charset=utf-8")

    def _empty(self, status: int) -> None:
        self._send(status, b"", None)


def autosubmit_form(action: str, fields: dict) -> str:
    """An HTML form that POSTs `fields` to `action` as soon as the page loads (OIDC form_post response mode)."""
    inputs = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(str(v))}">'
                     for k, v in fields.items())
    return (f'<form id="lti-post" method="post" action="{html.escape(action)}">{inputs}'
            '<noscript><button type="submit">Continue</button></noscript></form>'
            "<script>document.getElementById('lti-post').submit();</script>")


# --- helpers for tests playing the tool's part -----------------------------------------------------------------


def client_assertion(platform: MockPlatform, key: RsaKey, **overrides) -> str:
    """A client assertion JWT as a tool sends it to the token endpoint (RFC 7523); `overrides` replace or, with
    value None, drop claims (e.g. aud="https://elsewhere", jti=None)."""
    now = _now()
    claims = {"iss": platform.client_id, "sub": platform.client_id, "aud": platform.token_url, "iat": now,
              "exp": now + 60, "jti": "jti-" + secrets.token_hex(8)}
    claims.update(overrides)
    return key.sign({k: v for k, v in claims.items() if v is not None})


def token_request(platform: MockPlatform, key: RsaKey, scopes, **overrides) -> dict:
    """The form a tool POSTs to the token endpoint."""
    return {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(platform, key, **overrides), "scope": " ".join(scopes)}


def deep_link_response(platform: MockPlatform, key: RsaKey, *, data: str | None, items: list[dict],
                       **overrides) -> str:
    """An LtiDeepLinkingResponse JWT as a tool returns it (Deep Linking 2.0 section 4.2); `overrides` replace or,
    with value None, drop claims."""
    now = _now()
    claims = {"iss": platform.client_id, "aud": [platform.issuer], "iat": now, "exp": now + 600,
              "nonce": "nonce-" + secrets.token_hex(8), CLAIM_DEPLOYMENT_ID: platform.deployment_id,
              CLAIM_MESSAGE_TYPE: "LtiDeepLinkingResponse", CLAIM_VERSION: "1.3.0", CLAIM_DL_CONTENT_ITEMS: items,
              CLAIM_DL_DATA: data}
    claims.update(overrides)
    return key.sign({k: v for k, v in claims.items() if v is not None})


class _FormReader(HTMLParser):
    def __init__(self):
        super().__init__()
        self.action = None
        self.method = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and self.action is None:
            self.action, self.method = attrs.get("action"), (attrs.get("method") or "get").lower()
        elif tag == "input" and attrs.get("name"):
            self.fields[attrs["name"]] = attrs.get("value") or ""


def read_form(page: str) -> tuple[str, dict]:
    """(action, fields) of the first form in an HTML page: the platform's form_post answer, or a tool's
    auto-submitting deep linking response."""
    reader = _FormReader()
    reader.feed(page)
    if reader.action is None:
        raise ValueError("no form in the page")
    return reader.action, reader.fields
