"""Identity providers simulated in the suite, speaking the real protocols.

`OidcProvider`: a real HTTP server on 127.0.0.1 in a thread, with discovery, JWKS, an authorization endpoint
(that "signs in" whoever the test put in `next_claims`) and a token endpoint that checks the client's secret,
the redirect URI and the PKCE verifier, and returns an RS256 id_token. `tamper` bends the next id_token (wrong
audience, expired, signed with a key not in the JWKS, another nonce) for the refusal tests.

`SamlIdp`: the IdP side of SAML 2.0 built in the test: reads an AuthnRequest from the redirect URL and
returns a base64 Response whose assertion (and optionally the Response) is signed with the IdP's test key
through xmlsec (python3-saml's own signing helper, the same code a real IdP's library uses).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey


class OidcProvider:
    def __init__(self, client_id: str = "aula-client", client_secret: str = "s3cret-client-value-0123456789"):
        self.client_id = client_id
        self.client_secret = client_secret
        self.key = RSAKey.generate_key(2048, parameters={"kid": "sim-1"})
        self.rogue_key = RSAKey.generate_key(2048, parameters={"kid": "sim-1"})  # same kid, not published
        self.next_claims: dict = {}
        self.tamper: dict = {}
        self.codes: dict[str, dict] = {}
        self.token_requests: list[dict] = []
        self.authorize_requests: list[dict] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.issuer = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- what the endpoints answer ---

    def discovery(self) -> dict:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
        }

    def jwks(self) -> dict:
        return KeySet([self.key]).as_dict(private=False)

    def authorize(self, query: dict) -> tuple[int, dict]:
        q = {k: v[0] for k, v in query.items()}
        self.authorize_requests.append(q)
        if q.get("client_id") != self.client_id or q.get("response_type") != "code":
            return 400, {"error": "invalid_request"}
        code = secrets.token_urlsafe(16)
        self.codes[code] = {"redirect_uri": q["redirect_uri"], "nonce": q.get("nonce"),
                            "challenge": q.get("code_challenge"), "method": q.get("code_challenge_method"),
                            "claims": dict(self.next_claims)}
        return 302, {"Location": f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q.get('state', '')})}"}

    def token(self, headers, form: dict) -> tuple[int, dict]:
        f = {k: v[0] for k, v in form.items()}
        client_id, secret = f.get("client_id"), f.get("client_secret")
        auth = headers.get("Authorization", "")
        if auth.startswith("Basic "):
            client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        self.token_requests.append({"client_id": client_id, "secret_ok": secret == self.client_secret,
                                    "code_verifier": f.get("code_verifier"), "grant_type": f.get("grant_type")})
        if client_id != self.client_id or secret != self.client_secret:
            return 401, {"error": "invalid_client"}
        grant = self.codes.pop(f.get("code", ""), None)  # codes are single-use
        if grant is None or f.get("grant_type") != "authorization_code" or f.get("redirect_uri") != grant["redirect_uri"]:
            return 400, {"error": "invalid_grant"}
        verifier = f.get("code_verifier") or ""
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if grant["method"] != "S256" or challenge != grant["challenge"]:
            return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": self.client_id, "iat": now, "exp": now + 300,
                  "nonce": grant["nonce"], **grant["claims"]}
        t = self.tamper
        if "aud" in t:
            claims["aud"] = t["aud"]
        if "iss" in t:
            claims["iss"] = t["iss"]
        if "nonce" in t:
            claims["nonce"] = t["nonce"]
        if "exp_offset" in t:
            claims["exp"] = now + t["exp_offset"]
            claims["iat"] = now + t["exp_offset"] - 300
        key = self.rogue_key if t.get("rogue_key") else self.key
        id_token = jwt.encode({"alg": "RS256", "kid": "sim-1"}, claims, key)
        return 200, {"access_token": secrets.token_urlsafe(24), "token_type": "Bearer", "expires_in": 300,
                     "id_token": id_token}

    def _handler(self):
        sim = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _json(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urlparse(self.path)
                if url.path == "/.well-known/openid-configuration":
                    return self._json(200, sim.discovery())
                if url.path == "/jwks":
                    return self._json(200, sim.jwks())
                if url.path == "/authorize":
                    status, body = sim.authorize(parse_qs(url.query))
                    if status == 302:
                        self.send_response(302)
                        self.send_header("Location", body["Location"])
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return None
                    return self._json(status, body)
                return self._json(404, {"error": "not_found"})

            def do_POST(self):
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                if url.path == "/token":
                    return self._json(*sim.token(self.headers, form))
                return self._json(404, {"error": "not_found"})

        return Handler


# --- SAML ---------------------------------------------------------------------------------------------------

def self_signed(common_name: str) -> tuple[str, str]:
    """(private key PEM, certificate PEM) for a test IdP or SP."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365)).sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode()


def _instant(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


SAME = object()  # SamlIdp.response: the envelope's InResponseTo is the assertion's


class SamlIdp:
    def __init__(self, entity_id: str = "https://idp.example.test/saml"):
        self.entity_id = entity_id
        self.sso_url = "https://idp.example.test/saml/sso"
        self.key, self.cert = self_signed("Simulated IdP")

    @staticmethod
    def read_request(redirect_url: str, sp_cert: str | None = None) -> dict:
        """The AuthnRequest (HTTP-Redirect binding) a browser was sent to: its ID, ACS URL, issuer, RelayState;
        `signed` says whether it carried a signature that verifies with `sp_cert` (SAML bindings §3.4.4.1:
        over the URL-encoded SAMLRequest, RelayState and SigAlg, in that order)."""
        from onelogin.saml2.utils import OneLogin_Saml2_Utils
        from onelogin.saml2.xml_utils import OneLogin_Saml2_XML

        raw = dict(part.split("=", 1) for part in urlparse(redirect_url).query.split("&"))
        q = {k: v[0] for k, v in parse_qs(urlparse(redirect_url).query).items()}
        signed = False
        if "Signature" in q and sp_cert:
            signed_query = "&".join(f"{k}={raw[k]}" for k in ("SAMLRequest", "RelayState", "SigAlg") if k in raw)
            signed = OneLogin_Saml2_Utils.validate_binary_sign(signed_query, base64.b64decode(q["Signature"]),
                                                               sp_cert, q["SigAlg"])
        xml = OneLogin_Saml2_Utils.decode_base64_and_inflate(q["SAMLRequest"])
        root = OneLogin_Saml2_XML.to_etree(xml)
        issuer = root.find("{urn:oasis:names:tc:SAML:2.0:assertion}Issuer")
        return {"id": root.get("ID"), "acs": root.get("AssertionConsumerServiceURL"),
                "issuer": issuer.text if issuer is not None else None, "relay_state": q.get("RelayState"),
                "signed": signed, "xml": xml}

    def response(self, *, acs: str, audience: str, in_response_to: str | None, name_id: str,
                 attributes: dict[str, str] | None = None, assertion_id: str | None = None,
                 not_on_or_after: dt.datetime | None = None, issue_instant: dt.datetime | None = None,
                 sign_assertion: bool = True, sign_response: bool = False, key: str | None = None,
                 cert: str | None = None, tamper_after_signing: bool = False,
                 name_id_format: str = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified",
                 envelope_in_response_to=SAME) -> str:
        """`in_response_to` goes in the signed assertion's SubjectConfirmationData and, unless
        `envelope_in_response_to` says otherwise, in the (unsigned) Response envelope."""
        from onelogin.saml2.utils import OneLogin_Saml2_Utils

        now = issue_instant or dt.datetime.now(dt.UTC)
        not_after = not_on_or_after or now + dt.timedelta(minutes=5)
        assertion_id = assertion_id or "_a" + uuid.uuid4().hex
        irt = f' InResponseTo="{in_response_to}"' if in_response_to else ""
        attrs = "".join(
            f'<saml:Attribute Name="{n}" NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:basic">'
            f'<saml:AttributeValue xmlns:xs="http://www.w3.org/2001/XMLSchema" '
            f'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="xs:string">{v}</saml:AttributeValue>'
            f"</saml:Attribute>" for n, v in (attributes or {}).items())
        statement = f"<saml:AttributeStatement>{attrs}</saml:AttributeStatement>" if attrs else ""
        assertion = (
            f'<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{assertion_id}" '
            f'Version="2.0" IssueInstant="{_instant(now)}">'
            f"<saml:Issuer>{self.entity_id}</saml:Issuer>"
            f"<saml:Subject><saml:NameID Format=\"{name_id_format}\">{name_id}"
            f"</saml:NameID><saml:SubjectConfirmation Method=\"urn:oasis:names:tc:SAML:2.0:cm:bearer\">"
            f'<saml:SubjectConfirmationData NotOnOrAfter="{_instant(not_after)}" Recipient="{acs}"{irt}/>'
            f"</saml:SubjectConfirmation></saml:Subject>"
            f'<saml:Conditions NotBefore="{_instant(now - dt.timedelta(seconds=30))}" '
            f'NotOnOrAfter="{_instant(not_after)}"><saml:AudienceRestriction><saml:Audience>{audience}'
            f"</saml:Audience></saml:AudienceRestriction></saml:Conditions>"
            f'<saml:AuthnStatement AuthnInstant="{_instant(now)}" SessionIndex="_s{uuid.uuid4().hex}">'
            f"<saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:"
            f"PasswordProtectedTransport</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>"
            f"{statement}</saml:Assertion>"
        )
        key, cert = key or self.key, cert or self.cert
        if sign_assertion:
            assertion = _strip_decl(OneLogin_Saml2_Utils.add_sign(assertion, key, cert))
        if tamper_after_signing:  # a changed NameID under an intact signature: the digest no longer matches
            assertion = assertion.replace(f">{name_id}</saml:NameID>", ">someone-else</saml:NameID>")
        if envelope_in_response_to is not SAME:
            irt = f' InResponseTo="{envelope_in_response_to}"' if envelope_in_response_to else ""
        response = (
            f'<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
            f'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_r{uuid.uuid4().hex}" Version="2.0" '
            f'IssueInstant="{_instant(now)}" Destination="{acs}"{irt}>'
            f"<saml:Issuer>{self.entity_id}</saml:Issuer>"
            f'<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>'
            f"{assertion}</samlp:Response>"
        )
        if sign_response:
            response = _strip_decl(OneLogin_Saml2_Utils.add_sign(response, key, cert))
        return base64.b64encode(response.encode()).decode()


def rewrap(saml_response: str, in_response_to: str | None) -> str:
    """The same (signed) assertion in its Response envelope with another, unsigned, InResponseTo: what someone
    holding an assertion can do without the IdP's key."""
    from lxml import etree

    root = etree.fromstring(base64.b64decode(saml_response))
    if in_response_to is None:
        root.attrib.pop("InResponseTo", None)
    else:
        root.set("InResponseTo", in_response_to)
    return base64.b64encode(etree.tostring(root)).decode()


def _strip_decl(xml) -> str:
    text = xml.decode() if isinstance(xml, bytes) else xml
    if text.startswith("<?xml"):
        text = text[text.index("?>") + 2:]
    return text.strip()
