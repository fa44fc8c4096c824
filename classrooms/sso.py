"""Single sign-on protocol handling: OpenID Connect (authorization code + PKCE) and SAML 2.0 (SP-initiated),
and the mapping of an asserted person to someone the district rostered. Writes are in sso_services.py.

Libraries (docs/sso.md says why): OIDC with Authlib's requests client (PKCE S256, token request) and joserfc
for the id_token (signature against the IdP's JWKS, then Authlib's `CodeIDToken` claim rules: iss, aud, exp,
iat, nonce, azp, at_hash — https://docs.authlib.org/en/latest/specs/oidc.html); SAML with OneLogin's
python3-saml in strict mode (XML-DSig through xmlsec, Destination/Recipient, Audience, NotBefore/NotOnOrAfter,
InResponseTo — https://github.com/SAML-Toolkits/python3-saml#the-settings-files). What they leave to us is
here: single use of states, nonces and assertion ids, requiring the signed assertion's InResponseTo (python3-saml
compares it only when present, and otherwise trusts the unsigned Response envelope's), and refusing everything that
is not one person this district currently rosters.

Nothing here logs a subject, a NameID, an email, a token or a secret: only provider ids and reason codes.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from dataclasses import dataclass

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.oidc.core import CodeIDToken
from django.core.cache import cache
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from classrooms.models import District, ExternalIdentity, IdentityProvider, User
from classrooms.selectors import has_district_role, lti_platform_count, users_in_district
from config.secrets import Secret, UnreadableSecret

log = logging.getLogger("aula.sso")

HTTP_TIMEOUT = 10  # seconds, for discovery, JWKS and the token request
METADATA_TTL = 3600  # discovery documents and key sets are cached this long (a new kid forces a refresh)
PENDING_TTL = 600  # a sign-in must come back from the IdP within this many seconds
CLOCK_LEEWAY = 60  # seconds of clock difference tolerated on exp/iat and SAML time conditions
# Asymmetric algorithms only: never "none", never HMAC with a public key as the secret.
ID_TOKEN_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]

REASONS = {
    "provider_error": "The identity provider did not sign you in.",
    "invalid_response": "The identity provider's answer could not be verified, so nobody was signed in.",
    "expired_request": "This sign-in was started too long ago, in another browser, or was already used. "
                       "Start again from the sign-in page.",
    "replayed": "This sign-in answer was already used. Start again from the sign-in page.",
    "no_identifier": "The identity provider did not say who you are (the identifier Aula maps is missing).",
    "email_domain": "Your email address is not in a domain this district's sign-in accepts.",
    "email_unverified": "The identity provider has not verified your email address.",
    "unknown_person": "Aula has no account for you in this district. Accounts come from your school's roster: "
                      "ask your school to add you.",
    "ambiguous_person": "More than one Aula account matches you. Ask your school to fix the roster.",
    "other_district": "Your Aula account belongs to another district. Use your own district's sign-in.",
    "disabled": "Your Aula account is disabled. Ask your school.",
    "identity_conflict": "This identity is already linked to another Aula account. Ask your school.",
    "platform_account": "This Aula account cannot sign in through a district's identity provider.",
    "unavailable": "The identity provider cannot be reached right now. Try again in a few minutes.",
}


class Refused(Exception):
    """A sign-in refused for `reason` (a key of REASONS; the only thing logged)."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail  # for the log: a library's error text, never personal data

    @property
    def message(self) -> str:
        return REASONS.get(self.reason, REASONS["invalid_response"])


@dataclass(frozen=True)
class Asserted:
    """What an identity provider asserted, after every protocol check."""

    subject: str  # OIDC `sub` or SAML NameID: the ExternalIdentity subject
    value: str  # the value of the provider's `identity_claim`, mapped to a person
    email: str = ""
    email_verified: bool = False


def refuse_log(provider: IdentityProvider | None, reason: str, detail: str = "") -> None:
    log.warning("sso sign-in refused: reason=%s provider=%s district=%s detail=%s", reason,
                provider.pk if provider else None, provider.district_id if provider else None, detail[:300], extra={
        "sso_provider": provider.pk if provider else None,
        "sso_district": provider.district_id if provider else None,
        "sso_reason": reason, "sso_detail": detail[:300]})


# --- which district, which provider ----------------------------------------------------------------------------

def providers_for(login: str) -> list[IdentityProvider]:
    """The enabled providers for what someone typed on the sign-in page: a district slug or an email address
    (its domain is looked up in the providers' allowed domains)."""
    login = (login or "").strip().lower()
    if not login:
        return []
    # The list only names providers: their credentials stay in the database.
    qs = (IdentityProvider.objects.filter(enabled=True).select_related("district")
          .defer("oidc_client_secret", "saml_sp_private_key"))
    if "@" in login:
        domain = login.rsplit("@", 1)[1]
        # A substring match narrows it down in SQL; the exact domain check is done on the parsed list.
        return [p for p in qs.filter(email_domains__icontains=domain) if domain in p.domains]
    return list(qs.filter(district__slug=login))


def provider_for(district_slug: str, provider_slug: str) -> IdentityProvider | None:
    return (IdentityProvider.objects.select_related("district")
            .filter(district__slug=district_slug, slug=provider_slug, enabled=True).first())


# --- OpenID Connect --------------------------------------------------------------------------------------------

def _cache_key(provider: IdentityProvider, what: str, url: str) -> str:
    return f"sso:oidc:{what}:{provider.pk}:{hashlib.sha256(url.encode()).hexdigest()[:24]}"


def _get_json(url: str) -> dict:
    try:
        r = requests.get(url, timeout=HTTP_TIMEOUT, headers={"Accept": "application/json"})
        r.raise_for_status()
        return r.json()
    except (requests.RequestException, ValueError) as exc:
        raise Refused("unavailable", type(exc).__name__) from None


def oidc_metadata(provider: IdentityProvider) -> dict:
    """The provider's discovery document (OpenID Connect Discovery 1.0 §4), which must name its issuer."""
    issuer = provider.oidc_issuer.rstrip("/")
    url = issuer + "/.well-known/openid-configuration"
    key = _cache_key(provider, "meta", url)
    meta = cache.get(key)
    if meta is None:
        meta = _get_json(url)
        if meta.get("issuer", "").rstrip("/") != issuer:
            raise Refused("invalid_response", "discovery issuer differs from the configured issuer")
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not meta.get(name):
                raise Refused("invalid_response", f"discovery lacks {name}")
        cache.set(key, meta, METADATA_TTL)
    return meta


def oidc_jwks(provider: IdentityProvider, meta: dict, *, force: bool = False) -> KeySet:
    key = _cache_key(provider, "jwks", meta["jwks_uri"])
    data = None if force else cache.get(key)
    if data is None:
        data = _get_json(meta["jwks_uri"])
        cache.set(key, data, METADATA_TTL)
    try:
        return KeySet.import_key_set(data)
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise Refused("invalid_response", f"JWKS: {type(exc).__name__}") from None


def _revealed(provider: IdentityProvider, secret) -> str:
    """A stored credential's plain text ("" when none is stored). One that no key in AULA_SECRET_KEYS reads
    (an old key dropped before secrets_rotate finished) refuses this provider's sign-ins, not the page."""
    if not secret:
        return ""
    try:
        return secret.reveal() if isinstance(secret, Secret) else str(secret)
    except UnreadableSecret as exc:
        log.error("sso provider credential unreadable: provider=%s district=%s: %s", provider.pk,
                  provider.district_id, exc, extra={"sso_provider": provider.pk, "sso_district": provider.district_id})
        raise Refused("unavailable", "a stored credential of this provider cannot be decrypted") from None


def _oauth_client(provider: IdentityProvider, meta: dict, redirect_uri: str) -> OAuth2Session:
    methods = meta.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    method = "client_secret_basic" if "client_secret_basic" in methods else "client_secret_post"
    return OAuth2Session(
        client_id=provider.oidc_client_id,
        client_secret=_revealed(provider, provider.oidc_client_secret) or None,
        scope=provider.oidc_scopes or "openid",
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        token_endpoint_auth_method=method,
    )


def oidc_begin(provider: IdentityProvider, redirect_uri: str) -> tuple[str, str, dict]:
    """(authorization URL, state, what the callback needs): a fresh state, nonce and PKCE verifier."""
    meta = oidc_metadata(provider)
    state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
    with _oauth_client(provider, meta, redirect_uri) as client:
        url, _ = client.create_authorization_url(meta["authorization_endpoint"], state=state,
                                                 code_verifier=verifier, nonce=nonce)
    return url, state, {"provider": provider.pk, "nonce": nonce, "verifier": verifier}


def oidc_finish(provider: IdentityProvider, pending: dict, redirect_uri: str, code: str) -> Asserted:
    """Exchange the code (with the PKCE verifier) and validate the id_token. Raises Refused."""
    meta = oidc_metadata(provider)
    with _oauth_client(provider, meta, redirect_uri) as client:
        try:
            token = client.fetch_token(meta["token_endpoint"], grant_type="authorization_code", code=code,
                                       code_verifier=pending["verifier"], timeout=HTTP_TIMEOUT)
        except requests.RequestException as exc:
            raise Refused("unavailable", type(exc).__name__) from None
        except Exception as exc:  # Authlib's OAuthError and friends: the IdP refused the code
            raise Refused("provider_error", f"token request: {type(exc).__name__}") from None
    id_token = token.get("id_token")
    if not id_token:
        raise Refused("invalid_response", "no id_token in the token response")
    supported = meta.get("id_token_signing_alg_values_supported") or ["RS256"]
    algorithms = [a for a in ID_TOKEN_ALGORITHMS if a in supported] or ["RS256"]
    try:
        try:
            decoded = jwt.decode(id_token, oidc_jwks(provider, meta), algorithms=algorithms)
        except InvalidKeyIdError:  # the IdP rotated its keys since we cached them
            decoded = jwt.decode(id_token, oidc_jwks(provider, meta, force=True), algorithms=algorithms)
        claims = CodeIDToken(
            decoded.claims, decoded.header,
            options={"iss": {"essential": True, "value": meta["issuer"]},
                     "aud": {"essential": True, "value": provider.oidc_client_id},
                     "exp": {"essential": True}, "nonce": {"essential": True}},
            params={"nonce": pending["nonce"], "client_id": provider.oidc_client_id,
                    "access_token": token.get("access_token")},
        )
        claims.validate(leeway=CLOCK_LEEWAY)
    except (JoseError, ValueError) as exc:
        raise Refused("invalid_response", f"id_token: {type(exc).__name__}: {getattr(exc, 'error', '')} "
                      f"{getattr(exc, 'description', '') or ''}".strip()) from None
    # A nonce is good once, whichever browser brings it back (the state is already single-use per session).
    if not cache.add(f"sso:oidc:nonce:{provider.pk}:{hashlib.sha256(claims['nonce'].encode()).hexdigest()}",
                     1, PENDING_TTL + 2 * CLOCK_LEEWAY):
        raise Refused("replayed", "nonce seen before")
    value = claims.get(provider.mapped_claim)
    return Asserted(
        subject=str(claims["sub"]),
        value=str(value) if value not in (None, "") else "",
        email=str(claims.get("email") or ""),
        email_verified=claims.get("email_verified") in (True, "true", "True"),
    )


# --- SAML 2.0 --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SamlUrls:
    """Our SP URLs for one provider (absolute): the entity id is the metadata URL."""

    metadata: str
    acs: str


def saml_settings(provider: IdentityProvider, urls: SamlUrls) -> dict:
    """python3-saml settings, strict: signed assertions required, SHA-256, deprecated algorithms refused."""
    sp = {
        "entityId": urls.metadata,
        "assertionConsumerService": {"url": urls.acs,
                                     "binding": "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"},
        "NameIDFormat": "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified",
        "x509cert": provider.saml_sp_certificate or "",
        "privateKey": _revealed(provider, provider.saml_sp_private_key),
    }
    return {
        "strict": True,
        "debug": False,
        "sp": sp,
        "idp": {
            "entityId": provider.saml_entity_id,
            "singleSignOnService": {"url": provider.saml_sso_url,
                                    "binding": "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"},
            "x509certMulti": {"signing": provider.idp_certificates},
        },
        "security": {
            "authnRequestsSigned": bool(provider.saml_sign_requests and sp["privateKey"]),
            "wantAssertionsSigned": True,
            "wantMessagesSigned": False,
            "wantNameId": True,
            "wantAttributeStatement": False,  # mapping by NameID needs no attributes
            "requestedAuthnContext": False,
            "rejectDeprecatedAlgorithm": True,
            "signatureAlgorithm": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            "digestAlgorithm": "http://www.w3.org/2001/04/xmlenc#sha256",
            "allowRepeatAttributeName": True,
            # Only a syntax check of our own and the IdP's configured URLs: lets a school intranet host
            # without a dot (and the test client's "testserver") through.
            "allowSingleLabelDomains": True,
        },
    }


def saml_request_data(request) -> dict:
    """What python3-saml needs of the Django request (it rebuilds our URL to check Destination/Recipient)."""
    return {
        "https": "on" if request.is_secure() else "off",
        "http_host": request.get_host(),
        "script_name": request.path,
        "get_data": request.GET.copy(),
        "post_data": request.POST.copy(),
    }


def saml_begin(provider: IdentityProvider, request, urls: SamlUrls) -> tuple[str, str, dict]:
    """(IdP redirect URL, relay token, what the ACS needs). The relay token travels as RelayState: the ACS is
    a cross-site POST, which does not carry our SameSite=Lax session cookie."""
    from onelogin.saml2.auth import OneLogin_Saml2_Auth

    relay = secrets.token_urlsafe(32)
    auth = OneLogin_Saml2_Auth(saml_request_data(request), old_settings=saml_settings(provider, urls))
    url = auth.login(return_to=relay)
    return url, relay, {"provider": provider.pk, "request_id": auth.get_last_request_id()}


def _signed_in_response_to(response) -> set[str | None]:
    """The InResponseTo of each bearer SubjectConfirmationData in the signature-verified assertion (None where
    it has none), from python3-saml's response object after `is_valid()` passed.

    What makes that node the verified one: `is_valid()` accepts exactly one Assertion in the document
    (`validate_num_assertions`, which also counts encrypted ones), it must carry the one Assertion signature
    (`wantAssertionsSigned`, strict), whose Reference URI must name that Assertion's ID
    (`process_signed_elements`), and xmlsec verified it at `/samlp:Response/saml:Assertion/ds:Signature`
    (`ASSERTION_SIGNATURE_XPATH`) in `get_xml_document()` (the decrypted document for an encrypted assertion).
    The envelope's InResponseTo, which `get_last_response_in_response_to()` returns, is covered by no
    signature, as Aula does not require signed Responses."""
    from onelogin.saml2.constants import OneLogin_Saml2_Constants as C
    from onelogin.saml2.xml_utils import OneLogin_Saml2_XML

    document = response.get_xml_document()
    assertions = OneLogin_Saml2_XML.query(document, "/samlp:Response/saml:Assertion")
    if len(assertions) != 1:
        raise Refused("invalid_response", "not exactly one assertion")
    assertion = assertions[0]
    references = OneLogin_Saml2_XML.query(assertion, "./ds:Signature/ds:SignedInfo/ds:Reference")
    if len(references) != 1 or references[0].get("URI") != "#" + (assertion.get("ID") or ""):
        raise Refused("invalid_response", "the assertion is not the signed element")
    values = set()
    for confirmation in OneLogin_Saml2_XML.query(assertion, "./saml:Subject/saml:SubjectConfirmation"):
        if confirmation.get("Method", C.CM_BEARER) != C.CM_BEARER:
            continue
        data = OneLogin_Saml2_XML.query(confirmation, "./saml:SubjectConfirmationData")
        values |= {d.get("InResponseTo") for d in data} or {None}
    return values or {None}


def saml_finish(provider: IdentityProvider, request, urls: SamlUrls, pending: dict) -> Asserted:
    """Validate the Response posted to the ACS for the AuthnRequest `pending` describes. Raises Refused."""
    from onelogin.saml2.auth import OneLogin_Saml2_Auth
    from onelogin.saml2.errors import OneLogin_Saml2_Error, OneLogin_Saml2_ValidationError

    class Auth(OneLogin_Saml2_Auth):
        validated = None  # python3-saml's response object, once it passed is_valid()

        def store_valid_response(self, response):
            self.validated = response
            super().store_valid_response(response)

    auth = Auth(saml_request_data(request), old_settings=saml_settings(provider, urls))
    try:
        auth.process_response(request_id=pending["request_id"])
    except (OneLogin_Saml2_Error, OneLogin_Saml2_ValidationError, ValueError) as exc:
        raise Refused("invalid_response", f"{type(exc).__name__}: {exc}") from None
    except Exception as exc:  # malformed XML, base64, ... from lxml/xmlsec
        raise Refused("invalid_response", type(exc).__name__) from None
    if auth.get_errors() or not auth.is_authenticated() or auth.validated is None:
        raise Refused("invalid_response", f"{','.join(auth.get_errors())}: {auth.get_last_error_reason() or ''}")
    # A validly signed assertion is used up here, before any other refusal: one refused below (unsolicited, for
    # another request, for someone not rostered) must not come back later in another envelope.
    assertion_id = auth.get_last_assertion_id()
    if not assertion_id:
        raise Refused("invalid_response", "assertion without ID")
    not_after = auth.get_last_assertion_not_on_or_after()
    ttl = max(int(not_after - time.time()) + 2 * CLOCK_LEEWAY, PENDING_TTL) if not_after else 24 * 3600
    if not cache.add(f"sso:saml:assertion:{provider.pk}:{hashlib.sha256(assertion_id.encode()).hexdigest()}",
                     1, ttl):
        raise Refused("replayed", "assertion id seen before")
    # Aula answers only its own requests. python3-saml compares the assertion's InResponseTo only when the
    # assertion has one, and then against the envelope's, which nobody signed: the signed assertion must name
    # the AuthnRequest this browser's sign-in sent (an IdP-initiated assertion names none).
    if _signed_in_response_to(auth.validated) != {pending["request_id"]}:
        raise Refused("invalid_response", "the signed assertion's InResponseTo does not name our AuthnRequest")
    if auth.get_last_response_in_response_to() != pending["request_id"]:
        raise Refused("invalid_response", "the Response's InResponseTo does not name our AuthnRequest")
    attributes = auth.get_attributes()
    nameid = auth.get_nameid() or ""
    if auth.get_nameid_format() == "urn:oasis:names:tc:SAML:2.0:nameid-format:transient":
        # A new NameID at every sign-in would link a new ExternalIdentity each time: the IdP must send a
        # persistent (or email / unspecified, stable) NameID.
        raise Refused("no_identifier", "transient NameID: configure a persistent NameID at the IdP")

    def attribute(name: str) -> str:
        values = attributes.get(name) or []
        return str(values[0]) if values else ""

    claim = provider.mapped_claim
    value = nameid if claim.lower() == "nameid" else attribute(claim)
    email = ""
    for name in ("email", "mail", "emailAddress", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
                 "urn:oid:0.9.2342.19200300.100.1.3"):
        email = attribute(name)
        if email:
            break
    if not email and claim.lower() == "nameid" and "@" in nameid:
        email = nameid
    # A signed assertion from the district's own IdP vouches for the email it carries.
    return Asserted(subject=nameid, value=value, email=email, email_verified=bool(email))


def saml_metadata(provider: IdentityProvider, urls: SamlUrls) -> str:
    from onelogin.saml2.settings import OneLogin_Saml2_Settings

    s = OneLogin_Saml2_Settings(saml_settings(provider, urls), sp_validation_only=True)
    xml = s.get_sp_metadata()
    errors = s.validate_metadata(xml)
    if errors:
        raise ValueError(f"SP metadata invalid: {errors}")
    return xml.decode() if isinstance(xml, bytes) else xml


# --- who is it --------------------------------------------------------------------------------------------------

def rostered_in(user: User, district: District) -> bool:
    """Someone this district currently knows: an active membership or enrollment at one of its schools, a
    district role, or a OneRoster user record of its SIS not marked `tobedeleted`. Accounts are shared across
    districts: someone a district removed keeps the account (for the others), not the way in through its IdP."""
    from compliance.selectors import is_rostered_by  # compliance observes classrooms: imported where used

    return (users_in_district(district).filter(pk=user.pk).exists()
            or has_district_role(user, district)
            or is_rostered_by(district.pk, user.pk))


def person_for(provider: IdentityProvider, asserted: Asserted) -> User:
    """The one Aula account the assertion maps to in the provider's district. Raises Refused; never creates."""
    from compliance.selectors import rostered_user_by_sourced_id, user_sourced_id_in_other_districts

    district = provider.district
    maps = IdentityProvider.MapsTo
    value = asserted.email.strip() if provider.maps_to == maps.EMAIL else asserted.value.strip()
    if not asserted.subject or (not value and provider.maps_to != maps.EMAIL):
        raise Refused("no_identifier")
    email_domain = asserted.email.rsplit("@", 1)[1].lower() if "@" in asserted.email else ""
    if provider.domains and asserted.email and email_domain not in provider.domains:
        raise Refused("email_domain")
    user: User | None
    if provider.maps_to == maps.SOURCED_ID:
        user = rostered_user_by_sourced_id(district.pk, value)
        if user is None and user_sourced_id_in_other_districts(district.pk, value):
            raise Refused("other_district")
    elif provider.maps_to == maps.LTI_SUBJECT:
        identities = ExternalIdentity.objects.filter(kind=ExternalIdentity.Kind.LTI, subject=value)
        if provider.lti_issuer:
            identities = identities.filter(issuer=provider.lti_issuer)
        elif lti_platform_count(district) > 1:
            # Subjects are unique per platform only: without the issuer, the same subject at two of the
            # district's LMSs could be two people.
            raise Refused("ambiguous_person", "LTI subject mapping without lti_issuer in a district with "
                          "several LTI platforms")
        user_ids = set(identities.filter(district=district).values_list("user_id", flat=True))
        if len(user_ids) > 1:
            raise Refused("ambiguous_person")
        if not user_ids and identities.exists():
            raise Refused("other_district")
        user = User.objects.filter(pk__in=user_ids).first()
    else:
        if not asserted.email_verified or not asserted.email:
            raise Refused("email_unverified")
        if provider.domains and email_domain not in provider.domains:
            raise Refused("email_domain")
        matches = list(User.objects.filter(email__iexact=value)[:2])  # the verified email, not identity_claim
        if len(matches) > 1:
            raise Refused("ambiguous_person", "several accounts have this email address")
        user = matches[0] if matches else None
    if user is None:
        raise Refused("unknown_person")
    if user.is_superuser:
        # Platform operators: a district's IdP vouches for the district's people, never for Aula's operators.
        # (School staff, is_staff, are the district's people and do sign in here.)
        raise Refused("platform_account")
    if not user.is_active:
        raise Refused("disabled")
    if not rostered_in(user, district):
        raise Refused("other_district")
    return user
