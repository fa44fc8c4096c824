"""LTI 1.3 protocol glue over pylti1p3 (https://github.com/dmitry-viskov/pylti1.3): the tool configuration read
from the database, single-use nonces, bounded outbound HTTP, the platform key set cached and re-read when the
platform rotates its keys, and Aula's own signing keys.

pylti1p3 validates a launch (state, JWT format, nonce, registration by iss + aud, RS256 signature with exp/iat/nbf
through pyjwt, deployment, message claims); what it leaves to the tool and this module adds: a nonce can be used
once (pylti1p3 only checks that it exists), `azp` when `aud` lists several clients, an HTTP timeout, and a refetch
of the platform JWKS on an unknown `kid`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import typing as t

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.cache import cache
from jwcrypto.jwk import JWK
from pylti1p3.contrib.django import DjangoMessageLaunch, DjangoOIDCLogin
from pylti1p3.contrib.django.launch_data_storage.cache import DjangoCacheDataStorage
from pylti1p3.contrib.django.session import DjangoSessionService
from pylti1p3.deployment import Deployment
from pylti1p3.exception import LtiException
from pylti1p3.registration import Registration
from pylti1p3.service_connector import ServiceConnector
from pylti1p3.tool_config.abstract import ToolConfAbstract

from classrooms.models import LtiPlatform, LtiToolKey, Role

log = logging.getLogger("aula.lti")

CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
NRPS_CLAIM = "https://purl.imsglobal.org/spec/lti-nrps/claim/namesroleservice"
AGS_CLAIM = "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint"
DL_CLAIM = "https://purl.imsglobal.org/spec/lti-dl/claim/deep_linking_settings"
LIS_CLAIM = CLAIM + "lis"
AGS_SCOPES = ("https://purl.imsglobal.org/spec/lti-ags/scope/lineitem",
              "https://purl.imsglobal.org/spec/lti-ags/scope/score",
              "https://purl.imsglobal.org/spec/lti-ags/scope/result.readonly")
NRPS_SCOPE = "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly"
HTTP_TIMEOUT = (5, 15)
JWKS_CACHE_SECONDS = 600

# LIS role URIs (LTI 1.3 core, appendix A) → the Aula course role. Context roles first; institution roles
# (…/institution/person#Instructor) count when no context role is given. Mentors/observers have no Aula role.
_ROLE_ORDER = [
    ("Administrator", Role.TEACHER), ("Instructor", Role.TEACHER), ("ContentDeveloper", Role.TEACHER),
    ("TeachingAssistant", Role.TA), ("Learner", Role.STUDENT), ("Student", Role.STUDENT),
]


def course_role(roles: t.Iterable[str]) -> str | None:
    """The Aula role of a list of LIS role URIs (the strongest wins), or None."""
    roles = list(roles or [])
    context = [r for r in roles if "/membership" in r] or roles
    names = {r.rsplit("#", 1)[-1].rsplit("/", 1)[-1] for r in context}
    if "TeachingAssistant" in {r.rsplit("#", 1)[-1] for r in roles if "/membership/Instructor" in r}:
        return Role.TA  # …/membership/Instructor#TeachingAssistant is a sub-role of Instructor
    for name, role in _ROLE_ORDER:
        if name in names:
            return role
    return None


class BoundedSession(requests.Session):
    """Every outbound call to a platform has a timeout (pylti1p3's own sessions have none)."""

    def __init__(self):
        super().__init__()
        self.headers["User-Agent"] = "Aula-LTI/1.3"

    def request(self, method, url, **kwargs):
        kwargs.setdefault("timeout", HTTP_TIMEOUT)
        return super().request(method, url, **kwargs)


# --- Aula's signing keys -----------------------------------------------------------------------------------

def _kid(public_pem: str) -> str:
    return JWK.from_pem(public_pem.encode()).thumbprint()


def new_key_pair() -> tuple[str, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private_pem, public_pem


def public_jwk(public_pem: str) -> dict:
    jwk = json.loads(JWK.from_pem(public_pem.encode()).export_public())
    jwk.update({"kid": _kid(public_pem), "alg": "RS256", "use": "sig"})
    return jwk


class ToolRegistration(Registration):
    """A pylti1p3 Registration whose `kid` is the one Aula publishes (a JWK thumbprint of the signing key)."""

    def __init__(self, kid: str):
        super().__init__()
        self._aula_kid = kid

    def get_kid(self):
        return self._aula_kid

    def get_jwks(self):
        from classrooms.lti_selectors import jwks

        return jwks()["keys"]


_loaded_keys: dict[str, object] = {}


def _signing_key(key: LtiToolKey):
    """The private key as a key object, loaded once per process (the kid is the key's own thumbprint, so it
    names one key for ever): cryptography validates an RSA key on every load (~0.13 s here), which was most of
    the cost of a launch and of a grade delivery (docs/benchmarks.md "LTI"). pyjwt signs with key objects."""
    loaded = _loaded_keys.get(key.kid)
    if loaded is None:
        loaded = serialization.load_pem_private_key(key.private_key.reveal().encode(), password=None)
        _loaded_keys[key.kid] = loaded
    return loaded


def registration_for(platform: LtiPlatform, key: LtiToolKey) -> ToolRegistration:
    reg = ToolRegistration(key.kid)
    reg.set_issuer(platform.issuer).set_client_id(platform.client_id).set_key_set_url(platform.keyset_url) \
        .set_auth_login_url(platform.auth_login_url).set_auth_token_url(platform.auth_token_url) \
        .set_tool_private_key(_signing_key(key))
    if platform.auth_audience:
        reg.set_auth_audience(platform.auth_audience)
    return reg


class ToolConf(ToolConfAbstract):
    """Registrations and deployments from LtiPlatform rows (an issuer may have many client ids: one per district
    on a shared cloud LMS)."""

    def __init__(self):
        super().__init__()
        self.platform: LtiPlatform | None = None

    def check_iss_has_one_client(self, iss):
        return False

    def check_iss_has_many_clients(self, iss):
        return True

    def _platform(self, iss: str, client_id: str | None) -> LtiPlatform | None:
        if not client_id:
            return None
        platform = LtiPlatform.objects.filter(issuer=iss, client_id=client_id, is_active=True) \
            .select_related("district").first()
        if platform is not None:
            self.platform = platform
        return platform

    def find_registration_by_issuer(self, iss, *args, **kwargs):
        return None  # an issuer alone is ambiguous: Aula always asks for the client id

    def find_registration_by_params(self, iss, client_id, *args, **kwargs):
        from classrooms.lti_services import signing_key

        platform = self._platform(iss, client_id)
        return registration_for(platform, signing_key()) if platform else None

    def find_deployment(self, iss, deployment_id):
        return None

    def find_deployment_by_params(self, iss, deployment_id, client_id, *args, **kwargs):
        platform = self._platform(iss, client_id)
        if platform is None or str(deployment_id) not in [str(d) for d in platform.deployment_ids]:
            return None
        return Deployment().set_deployment_id(str(deployment_id))


class SingleUseNonceSession(DjangoSessionService):
    """The nonce of a launch is consumed by the launch: the same id_token posted again is refused."""

    def check_nonce(self, nonce):
        key = self.data_storage._prepare_key(self._get_key("nonce", nonce))
        return bool(cache.delete(key))  # Redis DEL: atomic, so two concurrent replays cannot both pass


def launch_storage() -> DjangoCacheDataStorage:
    return DjangoCacheDataStorage(cache_name="default")


def oidc_login(request, conf: ToolConf) -> DjangoOIDCLogin:
    return DjangoOIDCLogin(request, conf, session_service=SingleUseNonceSession(request),
                           launch_data_storage=launch_storage())


class MessageLaunch(DjangoMessageLaunch):
    """pylti1p3's launch with the checks it leaves out (module docstring)."""

    def __init__(self, request, conf: ToolConf, session_service=None, cookie_service=None, launch_data_storage=None,
                 requests_session=None):
        super().__init__(request, conf, session_service=session_service or SingleUseNonceSession(request),
                         cookie_service=cookie_service, launch_data_storage=launch_data_storage or launch_storage(),
                         requests_session=requests_session or BoundedSession())
        self._jwks_refetched = False

    def fetch_public_key(self, key_set_url):
        key = "lti:jwks:" + hashlib.sha256(key_set_url.encode()).hexdigest()
        cached = cache.get(key)
        if cached is not None:
            return cached
        try:
            response = self._requests_session.get(key_set_url)
            response.raise_for_status()
            keys = response.json()
        except (requests.RequestException, ValueError):
            raise LtiException("The platform's key set could not be read") from None
        cache.set(key, keys, JWKS_CACHE_SECONDS)
        return keys

    def get_public_key(self):
        try:
            return super().get_public_key()
        except LtiException as exc:
            if self._jwks_refetched or "Unable to find public key" not in str(exc):
                raise
            # The platform may have rotated its keys since we cached its key set: read it once more.
            self._jwks_refetched = True
            cache.delete("lti:jwks:" + hashlib.sha256(self._registration.get_key_set_url().encode()).hexdigest())
            self._registration.set_key_set(None)
            return super().get_public_key()

    def validate_registration(self):
        super().validate_registration()
        body = self._get_jwt_body()
        aud = body.get("aud")
        if isinstance(aud, list) and len(aud) > 1 and body.get("azp") != self._registration.get_client_id():
            raise LtiException("azp does not name this tool's client id")
        return self

    def platform(self) -> LtiPlatform:
        return self._tool_config.platform


class CachedTokenConnector(ServiceConnector):
    """Service calls reuse one access token per platform and scope set until shortly before it expires (a
    grade burst at the end of an exam must not ask the platform for a token per score)."""

    def __init__(self, platform: LtiPlatform, registration: Registration):
        super().__init__(registration, requests_session=BoundedSession())
        self._platform_pk = platform.pk

    def _token_key(self, scopes) -> str:
        return f"lti:token:{self._platform_pk}:" + hashlib.sha256(" ".join(sorted(scopes)).encode()).hexdigest()

    def get_access_token(self, scopes):
        key = self._token_key(scopes)
        token = cache.get(key)
        if token:
            return token
        token = super().get_access_token(scopes)
        cache.set(key, token, 300)  # platforms issue 1-hour tokens; 5 minutes leaves margin for clock skew
        return token

    def forget_token(self, scopes) -> None:
        cache.delete(self._token_key(scopes))
        self._access_tokens.clear()


def connector(platform: LtiPlatform) -> CachedTokenConnector:
    from classrooms.lti_services import signing_key

    return CachedTokenConnector(platform, registration_for(platform, signing_key()))
