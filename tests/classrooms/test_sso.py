"""Single sign-on against identity providers simulated in the suite (tests/classrooms/idp_sim.py): a real OIDC
provider on 127.0.0.1 and a SAML IdP that signs with its own key; real PostgreSQL and Redis."""

from __future__ import annotations

import datetime as dt
import logging
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from django.conf import settings
from django.db import connection
from django.test import Client
from django.urls import get_resolver, include, path

from classrooms import services, sso_services
from classrooms.models import Enrollment, ExternalIdentity, IdentityProvider, LtiPlatform, Membership, User
from classrooms.sso_admin import IdentityProviderForm
from compliance.rostering import Roster
from tests import factories
from tests.classrooms.idp_sim import OidcProvider, SamlIdp, rewrap, self_signed

# The whole site, with the SSO routes under /sso/ as config/urls.py includes them (added here only while
# config/urls.py does not: the tests run either way, never with the routes twice).
urlpatterns = [path("", include("config.urls"))]
if "sso" not in get_resolver("config.urls").namespace_dict:
    urlpatterns.insert(0, path("sso/", include("classrooms.sso_urls")))

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

SECRET = "s3cret-client-value-0123456789"


@pytest.fixture
def oidc():
    with OidcProvider(client_secret=SECRET) as sim:
        yield sim


def oidc_provider(district, sim: OidcProvider, *, slug="google", maps_to=IdentityProvider.MapsTo.SOURCED_ID,
                  claim="sourced_id", domains="") -> IdentityProvider:
    return IdentityProvider.objects.create(
        district=district, slug=slug, kind=IdentityProvider.Kind.OIDC, display_name="Google Workspace",
        oidc_issuer=sim.issuer, oidc_client_id=sim.client_id, oidc_client_secret=SECRET,
        identity_claim=claim, maps_to=maps_to, email_domains=domains)


def oidc_round(client: Client, provider: IdentityProvider, sim: OidcProvider, claims: dict, next_url="/"):
    """Start at /sso/…, let the simulated IdP sign `claims` in, come back: the response of the callback."""
    r = client.get(f"/sso/{provider.district.slug}/{provider.slug}/", {"next": next_url})
    assert r.status_code == 302, r.content
    sim.next_claims = claims
    back = requests.get(r["Location"], allow_redirects=False, timeout=10)  # the browser at the real IdP
    assert back.status_code == 302
    cb = urlparse(back.headers["Location"])
    assert cb.path == f"/sso/{provider.district.slug}/{provider.slug}/oidc/callback/"
    return client.get(f"{cb.path}?{cb.query}")


def signed_in_as(client: Client) -> User | None:
    uid = client.session.get("_auth_user_id")
    return User.objects.get(pk=uid) if uid else None


def refused_reason(response) -> str:
    assert response.status_code == 403, response.content[:500]
    html = response.content.decode()
    marker = 'data-reason="'
    return html[html.index(marker) + len(marker):].split('"', 1)[0]


# --- OpenID Connect ------------------------------------------------------------------------------------------

def test_oidc_sign_in_by_sourced_id_with_pkce_links_the_identity(world, oidc, caplog):
    caplog.set_level(logging.DEBUG)
    Roster(world.district).link("user", "stu-a-001", world.student_a.pk)
    provider = oidc_provider(world.district, oidc)
    client = Client()
    r = oidc_round(client, provider, oidc, {"sub": "google-77", "sourced_id": "stu-a-001",
                                            "email": world.student_a.email, "email_verified": True},
                   next_url="/exams/")
    assert r.status_code == 302 and r["Location"] == "/exams/"
    assert signed_in_as(client) == world.student_a
    # Authorization code + PKCE S256 + state + nonce, the secret sent to the token endpoint.
    auth = oidc.authorize_requests[-1]
    assert auth["code_challenge_method"] == "S256" and auth["code_challenge"] and auth["state"] and auth["nonce"]
    assert auth["scope"] == "openid email profile"
    token = oidc.token_requests[-1]
    assert token["secret_ok"] and token["code_verifier"] and token["grant_type"] == "authorization_code"
    identity = ExternalIdentity.objects.get(kind="oidc", issuer=oidc.issuer, subject="google-77")
    assert identity.user == world.student_a and identity.district == world.district
    first_seen = identity.last_seen_at
    assert first_seen is not None
    # A second sign-in reuses the link and stamps it.
    again = Client()
    assert oidc_round(again, provider, oidc, {"sub": "google-77", "sourced_id": "stu-a-001"}).status_code == 302
    identity.refresh_from_db()
    assert identity.last_seen_at > first_seen
    assert ExternalIdentity.objects.filter(kind="oidc").count() == 1
    # Logged without personal data or secrets.
    text = caplog.text + " ".join(str(rec.__dict__) for rec in caplog.records)
    for private in (SECRET, world.student_a.email, "google-77", "stu-a-001"):
        assert private not in text
    assert any(rec.getMessage().startswith("sso sign-in:") and rec.sso_user == world.student_a.pk for rec in caplog.records)


def test_oidc_sign_in_by_lti_subject(world, oidc):
    ExternalIdentity.objects.create(district=world.district, user=world.teacher_a, kind="lti",
                                    issuer="https://canvas.example.test", subject="lti-sub-9")
    provider = oidc_provider(world.district, oidc, maps_to=IdentityProvider.MapsTo.LTI_SUBJECT, claim="sub")
    client = Client()
    assert oidc_round(client, provider, oidc, {"sub": "lti-sub-9"}).status_code == 302
    assert signed_in_as(client) == world.teacher_a
    # The same LTI subject known only in another district is refused.
    ExternalIdentity.objects.create(district=world.other_district, user=world.student_c, kind="lti",
                                    issuer="https://canvas.example.test", subject="lti-sub-c")
    other = Client()
    assert refused_reason(oidc_round(other, provider, oidc, {"sub": "lti-sub-c"})) == "other_district"
    assert signed_in_as(other) is None


def test_oidc_sign_in_by_verified_email_in_allowed_domains(world, oidc):
    provider = oidc_provider(world.district, oidc, maps_to=IdentityProvider.MapsTo.EMAIL, claim="email",
                             domains="example.test")
    client = Client()
    r = oidc_round(client, provider, oidc, {"sub": "g-b", "email": world.student_b.email.upper(),
                                            "email_verified": True})
    assert r.status_code == 302 and signed_in_as(client) == world.student_b
    # Unverified email, a domain the district does not accept, someone of another district: refused.
    c2 = Client()
    assert refused_reason(oidc_round(c2, provider, oidc, {"sub": "g-b2", "email": world.student_b.email,
                                                          "email_verified": False})) == "email_unverified"
    c3 = Client()
    assert refused_reason(oidc_round(c3, provider, oidc, {"sub": "g-x", "email": "student_b@elsewhere.test",
                                                          "email_verified": True})) == "email_domain"
    c4 = Client()
    assert refused_reason(oidc_round(c4, provider, oidc, {"sub": "g-c", "email": world.student_c.email,
                                                          "email_verified": True})) == "other_district"
    assert all(signed_in_as(c) is None for c in (c2, c3, c4))


def test_a_district_idp_signs_in_only_people_the_district_still_has(world, oidc):
    """Accounts are shared across districts: someone district A removed keeps the account (district B still has
    them), but A's IdP no longer signs them in. Inactive memberships and enrollments and SIS records marked
    `tobedeleted` do not count."""
    provider = oidc_provider(world.district, oidc, maps_to=IdentityProvider.MapsTo.EMAIL, claim="email",
                             domains="example.test")
    leaver = factories.user("leaver", age=14)
    factories.enroll(world.course_a, leaver)
    services.membership_grant(user=leaver, institution=world.school_c, role="student")  # district B's too
    Roster(world.district).link("user", "lv-1", leaver.pk)
    claims = {"sub": "g-leaver", "email": leaver.email, "email_verified": True}
    first = Client()
    assert oidc_round(first, provider, oidc, claims).status_code == 302 and signed_in_as(first) == leaver
    # District A's SIS deletes the person (memberships at A's schools deactivated, the record marked
    # tobedeleted) and the class enrollment is dropped.
    assert Roster(world.district).tombstone("user", "lv-1")
    services.enrollment_drop(enrollment=Enrollment.objects.get(user=leaver, course=world.course_a))
    assert not Membership.objects.filter(user=leaver, institution__district=world.district, is_active=True).exists()
    after = Client()
    assert refused_reason(oidc_round(after, provider, oidc, claims)) == "other_district"
    assert signed_in_as(after) is None
    # An active enrollment on its own counts (the membership stays inactive).
    services.enrollment_upsert(course=world.course_a, user=leaver, role="student")
    assert oidc_round(Client(), provider, oidc, claims).status_code == 302
    # A SIS record alone counts while the SIS lists the person, not once it marked them tobedeleted.
    listed = factories.user("listed_only")
    Roster(world.district).link("user", "lo-1", listed.pk)
    listed_claims = {"sub": "g-listed", "email": listed.email, "email_verified": True}
    assert oidc_round(Client(), provider, oidc, listed_claims).status_code == 302
    Roster(world.district).tombstone("user", "lo-1")
    assert refused_reason(oidc_round(Client(), provider, oidc, listed_claims)) == "other_district"


def test_sourced_id_the_sis_deleted_maps_nobody(world, oidc):
    Roster(world.district).link("user", "stu-a-001", world.student_a.pk)
    provider = oidc_provider(world.district, oidc)
    Roster(world.district).tombstone("user", "stu-a-001")
    client = Client()
    assert refused_reason(oidc_round(client, provider, oidc, {"sub": "a", "sourced_id": "stu-a-001"})) \
        == "unknown_person"
    assert signed_in_as(client) is None


def test_superusers_are_never_signed_in_by_a_district_idp_school_staff_are(world, oidc):
    provider = oidc_provider(world.district, oidc, maps_to=IdentityProvider.MapsTo.EMAIL, claim="email",
                             domains="example.test")
    root = factories.user("root", superuser=True)
    services.membership_grant(user=root, institution=world.school_a, role="staff")  # even one on its rolls
    client = Client()
    r = oidc_round(client, provider, oidc, {"sub": "g-root", "email": root.email, "email_verified": True})
    assert refused_reason(r) == "platform_account" and signed_in_as(client) is None
    assert not ExternalIdentity.objects.filter(user=root).exists()
    staff = Client()
    assert world.staff_a.is_staff
    assert oidc_round(staff, provider, oidc, {"sub": "g-staff", "email": world.staff_a.email,
                                             "email_verified": True}).status_code == 302
    assert signed_in_as(staff) == world.staff_a


def test_lti_subject_mapping_needs_the_issuer_when_the_district_has_several_platforms(world, oidc):
    platforms = [LtiPlatform.objects.create(
        district=world.district, name=f"LMS {n}", issuer=f"https://lms{n}.example.test", client_id="aula",
        auth_login_url=f"https://lms{n}.example.test/auth", auth_token_url=f"https://lms{n}.example.test/token",
        keyset_url=f"https://lms{n}.example.test/jwks") for n in (1, 2)]
    # The same subject at two of the district's LMSs: two different people.
    ExternalIdentity.objects.create(district=world.district, user=world.teacher_a, kind="lti",
                                    issuer=platforms[0].issuer, subject="7")
    ExternalIdentity.objects.create(district=world.district, user=world.student_a, kind="lti",
                                    issuer=platforms[1].issuer, subject="8")
    provider = oidc_provider(world.district, oidc, maps_to=IdentityProvider.MapsTo.LTI_SUBJECT, claim="sub")
    client = Client()
    assert refused_reason(oidc_round(client, provider, oidc, {"sub": "8"})) == "ambiguous_person"
    assert signed_in_as(client) is None
    provider.lti_issuer = platforms[1].issuer
    provider.save()
    assert oidc_round(client, provider, oidc, {"sub": "8"}).status_code == 302
    assert signed_in_as(client) == world.student_a
    # The admin form asks for the issuer in such a district.
    data = {"district": world.district.pk, "slug": "lms-sso", "kind": "oidc", "display_name": "LMS sign-in",
            "enabled": "on", "oidc_issuer": oidc.issuer, "oidc_client_id": oidc.client_id,
            "oidc_client_secret": SECRET, "oidc_scopes": "openid", "identity_claim": "sub",
            "maps_to": "lti_subject", "lti_issuer": "", "email_domains": ""}
    form = IdentityProviderForm(data=data)
    assert not form.is_valid() and "lti_issuer" in form.errors
    assert IdentityProviderForm(data={**data, "lti_issuer": platforms[0].issuer}).is_valid()
    platforms[1].delete()
    assert IdentityProviderForm(data=data).is_valid()  # one platform: unambiguous


def test_email_mapping_refuses_when_several_accounts_have_the_email(world, oidc):
    provider = oidc_provider(world.district, oidc, maps_to=IdentityProvider.MapsTo.EMAIL, claim="email",
                             domains="example.test")
    # Email is unique only as typed: an account with another spelling of student_b's address.
    twin = User.objects.create(email=world.student_b.email.upper(), username="student_b_twin")
    factories.enroll(world.course_a, twin)
    client = Client()
    r = oidc_round(client, provider, oidc, {"sub": "g-b", "email": world.student_b.email, "email_verified": True})
    assert refused_reason(r) == "ambiguous_person" and signed_in_as(client) is None


def refusal_detail(caplog) -> str:
    return " ".join(str(getattr(rec, "sso_detail", "")) for rec in caplog.records if rec.name == "aula.sso")


@pytest.mark.parametrize(("tamper", "detail"), [
    ({"rogue_key": True}, "BadSignatureError"), ({"aud": "someone-else"}, "Invalid claim: 'aud'"),
    ({"exp_offset": -3600}, "ExpiredTokenError"), ({"iss": "https://evil.example.test"}, "Invalid claim: 'iss'"),
    ({"nonce": "not-the-nonce"}, "Invalid claim: 'nonce'")])
def test_oidc_id_token_checks_refuse(world, oidc, tamper, detail, caplog):
    Roster(world.district).link("user", "stu-a-001", world.student_a.pk)
    provider = oidc_provider(world.district, oidc)
    oidc.tamper = tamper
    client = Client()
    r = oidc_round(client, provider, oidc, {"sub": "google-77", "sourced_id": "stu-a-001"})
    assert refused_reason(r) == "invalid_response"
    assert detail in refusal_detail(caplog)  # refused by the check meant, not by accident
    assert signed_in_as(client) is None
    assert not ExternalIdentity.objects.filter(kind="oidc").exists()


def test_oidc_replayed_state_and_callback_refused(world, oidc):
    Roster(world.district).link("user", "stu-a-001", world.student_a.pk)
    provider = oidc_provider(world.district, oidc)
    client = Client()
    r = client.get(f"/sso/{world.district.slug}/{provider.slug}/")
    oidc.next_claims = {"sub": "google-77", "sourced_id": "stu-a-001"}
    cb = urlparse(requests.get(r["Location"], allow_redirects=False, timeout=10).headers["Location"])
    callback = f"{cb.path}?{cb.query}"
    # Another browser bringing the callback (login CSRF / stolen code): no such state in its session.
    intruder = Client()
    assert refused_reason(intruder.get(callback)) == "expired_request"
    assert signed_in_as(intruder) is None
    assert client.get(callback).status_code == 302 and signed_in_as(client) == world.student_a
    # The same callback again (replayed state): refused, even in the browser that started it.
    client.logout()
    assert refused_reason(client.get(callback)) == "expired_request"
    # A forged state never issued: refused.
    forged = callback.replace(parse_qs(cb.query)["state"][0], "forged-state")
    assert refused_reason(client.get(forged)) == "expired_request"


def test_oidc_nonce_is_single_use_even_if_its_state_comes_back(world, oidc):
    """A pending sign-in restored (an old session snapshot, a race between two servers) and answered again by
    the IdP with the same nonce: the nonce was used, so it is refused."""
    Roster(world.district).link("user", "stu-a-001", world.student_a.pk)
    provider = oidc_provider(world.district, oidc)
    client = Client()
    authorize = client.get(f"/sso/{world.district.slug}/{provider.slug}/")["Location"]
    snapshot = dict(client.session["sso_oidc_pending"])
    oidc.next_claims = {"sub": "google-77", "sourced_id": "stu-a-001"}
    cb = urlparse(requests.get(authorize, allow_redirects=False, timeout=10).headers["Location"])
    assert client.get(f"{cb.path}?{cb.query}").status_code == 302
    client.logout()
    session = client.session
    session["sso_oidc_pending"] = snapshot
    session.save()
    cb = urlparse(requests.get(authorize, allow_redirects=False, timeout=10).headers["Location"])  # new code
    assert refused_reason(client.get(f"{cb.path}?{cb.query}")) == "replayed"
    assert signed_in_as(client) is None


def test_oidc_unknown_person_gets_no_account(world, oidc):
    provider = oidc_provider(world.district, oidc)
    users = User.objects.count()
    client = Client()
    r = oidc_round(client, provider, oidc, {"sub": "new-person", "sourced_id": "nobody-123"})
    assert refused_reason(r) == "unknown_person"
    assert "Accounts come from your school" in r.content.decode()
    assert User.objects.count() == users and not ExternalIdentity.objects.exists()


def test_oidc_other_district_and_disabled_refused(world, oidc):
    Roster(world.other_district).link("user", "stu-c-001", world.student_c.pk)
    Roster(world.district).link("user", "stu-a-001", world.student_a.pk)
    provider = oidc_provider(world.district, oidc)
    c1 = Client()
    assert refused_reason(oidc_round(c1, provider, oidc, {"sub": "c", "sourced_id": "stu-c-001"})) == "other_district"
    world.student_a.is_active = False
    world.student_a.save()
    c2 = Client()
    assert refused_reason(oidc_round(c2, provider, oidc, {"sub": "a", "sourced_id": "stu-a-001"})) == "disabled"
    assert signed_in_as(c1) is None and signed_in_as(c2) is None


def test_an_identity_linked_to_someone_else_is_refused(world, oidc):
    Roster(world.district).link("user", "stu-a-001", world.student_a.pk)
    ExternalIdentity.objects.create(district=world.district, user=world.student_b, kind="oidc",
                                    issuer=oidc.issuer, subject="google-77")
    provider = oidc_provider(world.district, oidc)
    client = Client()
    r = oidc_round(client, provider, oidc, {"sub": "google-77", "sourced_id": "stu-a-001"})
    assert refused_reason(r) == "identity_conflict" and signed_in_as(client) is None


def test_disabled_provider_is_not_offered_nor_usable(world, oidc):
    provider = oidc_provider(world.district, oidc)
    provider.enabled = False
    provider.save()
    assert Client().get(f"/sso/{world.district.slug}/{provider.slug}/").status_code == 404


def test_client_secret_encrypted_at_rest_and_never_shown(world, oidc, caplog):
    caplog.set_level(logging.DEBUG)
    provider = oidc_provider(world.district, oidc)
    with connection.cursor() as cur:
        cur.execute("SELECT oidc_client_secret FROM classrooms_identityprovider WHERE id = %s", [provider.pk])
        stored = cur.fetchone()[0]
    assert stored.startswith("fernet:") and SECRET not in stored
    loaded = IdentityProvider.objects.get(pk=provider.pk)
    assert SECRET not in repr(loaded.oidc_client_secret) and SECRET not in str(loaded.oidc_client_secret)
    assert loaded.oidc_client_secret.reveal() == SECRET
    # The admin never shows it back, and saving without retyping it keeps it.
    admin = factories.user("root", superuser=True)
    client = Client()
    client.force_login(admin)
    page = client.get(f"/admin/classrooms/identityprovider/{provider.pk}/change/")
    assert page.status_code == 200 and SECRET not in page.content.decode()
    assert "Stored: yes." in page.content.decode()
    form = {"district": world.district.pk, "slug": "google", "kind": "oidc", "display_name": "Google (renamed)",
            "enabled": "on", "oidc_issuer": oidc.issuer, "oidc_client_id": oidc.client_id, "oidc_client_secret": "",
            "oidc_scopes": "openid email", "saml_entity_id": "", "saml_sso_url": "", "saml_idp_certificates": "",
            "saml_sp_private_key": "", "saml_sp_certificate": "", "identity_claim": "sourced_id",
            "maps_to": "sourced_id", "lti_issuer": "", "email_domains": ""}
    r = client.post(f"/admin/classrooms/identityprovider/{provider.pk}/change/", form)
    assert r.status_code == 302, r.content.decode()[:2000]
    provider.refresh_from_db()
    assert provider.display_name == "Google (renamed)" and provider.oidc_client_secret.reveal() == SECRET
    # A new secret (rotation at the IdP) replaces it.
    r = client.post(f"/admin/classrooms/identityprovider/{provider.pk}/change/",
                    {**form, "oidc_client_secret": "rotated-secret-0987654321"})
    assert r.status_code == 302
    provider.refresh_from_db()
    assert provider.oidc_client_secret.reveal() == "rotated-secret-0987654321"
    # School staff do not see providers at all.
    staff = Client()
    staff.force_login(world.staff_a)
    assert staff.get(f"/admin/classrooms/identityprovider/{provider.pk}/change/").status_code in (302, 403)
    # A sign-in with the stored secret logs nothing of it.
    oidc.client_secret = "rotated-secret-0987654321"
    Roster(world.district).link("user", "stu-a-001", world.student_a.pk)
    assert oidc_round(Client(), provider, oidc, {"sub": "x", "sourced_id": "stu-a-001"}).status_code == 302
    text = caplog.text + " ".join(str(rec.__dict__) for rec in caplog.records)
    assert SECRET not in text and "rotated-secret-0987654321" not in text


def test_an_unreadable_client_secret_refuses_only_its_provider(world, oidc, settings):
    """AULA_SECRET_KEYS lost the key of one provider's secret (dropped before secrets_rotate finished): that
    provider's sign-in is refused with a reason, the sign-in page and the district's other providers work."""
    from cryptography.fernet import Fernet

    Roster(world.district).link("user", "stu-a-001", world.student_a.pk)
    keys = list(settings.AULA_SECRET_KEYS)
    settings.AULA_SECRET_KEYS = [Fernet.generate_key().decode()]
    stale = oidc_provider(world.district, oidc, slug="stale")
    settings.AULA_SECRET_KEYS = keys
    fresh = oidc_provider(world.district, oidc, slug="google")
    page = Client().get("/accounts/login/", {"district": world.district.slug})
    assert page.status_code == 200 and f"/sso/{world.district.slug}/stale/" in page.content.decode()
    r = Client().get(f"/sso/{world.district.slug}/{stale.slug}/")
    assert refused_reason(r) == "unavailable"
    client = Client()
    assert oidc_round(client, fresh, oidc, {"sub": "g", "sourced_id": "stu-a-001"}).status_code == 302
    assert signed_in_as(client) == world.student_a


# --- the sign-in page and local passwords ------------------------------------------------------------------------

def test_login_page_offers_the_district_provider_and_finds_it_by_email_domain(world, oidc):
    provider = oidc_provider(world.district, oidc, domains="northside.example, example.test")
    page = Client().get("/accounts/login/", {"district": world.district.slug})
    html = page.content.decode()
    assert "Sign in with Google Workspace" in html and f"/sso/{world.district.slug}/google/" in html
    # The school-account box: a page that moves on to the one provider (a redirect from the form submission
    # would be blocked by the CSP's form-action 'self').
    r = Client().get("/sso/", {"login": "someone@northside.example", "next": "/exams/"})
    begin = f"/sso/{world.district.slug}/{provider.slug}/?next=/exams/"
    assert r.status_code == 200 and f'content="0;url={begin}"' in r.content.decode()
    assert Client().get("/sso/", {"login": "someone@unknown.example"}).status_code == 404
    assert Client().get("/sso/", {"login": world.district.slug}).status_code == 200
    assert Client().get("/sso/", {"login": "someone@northside.example", "next": "https://evil.example/"}
                        ).context["auto"].endswith("?next=/")


def test_local_passwords_off_refuses_password_sign_in_but_sso_works(world, oidc):
    world.district.local_passwords = False
    world.district.save()
    client = Client()
    r = client.post("/accounts/login/", {"username": world.student_a.email, "password": factories.PASSWORD})
    assert r.status_code == 200 and signed_in_as(client) is None
    assert "signs you in through its identity provider" in r.content.decode()
    # A wrong password still says only that it does not match (nothing about the district).
    r = client.post("/accounts/login/", {"username": world.student_a.email, "password": "wrong-password-1"})
    assert "identity provider" not in r.content.decode()
    # The admin's sign-in too (school staff of that district).
    r = client.post("/admin/login/", {"username": world.staff_a.email, "password": factories.PASSWORD,
                                      "next": "/admin/"})
    assert r.status_code == 200 and "signs you in through its identity provider" in r.content.decode()
    # Exempt: superusers, people of a district that keeps passwords, people in no district.
    root = factories.user("root", superuser=True)
    services.membership_grant(user=root, institution=world.school_a, role="staff")
    for person in (root, world.student_c, world.outsider):
        c = Client()
        c.post("/accounts/login/", {"username": person.email, "password": factories.PASSWORD})
        assert signed_in_as(c) == person
    # Someone in both districts keeps the password of the district that allows it.
    services.membership_grant(user=world.student_b, institution=world.school_c, role="student")
    c = Client()
    c.post("/accounts/login/", {"username": world.student_b.email, "password": factories.PASSWORD})
    assert signed_in_as(c) == world.student_b
    # Someone the district removed (membership and enrollment inactive) is no longer bound by its rule.
    former = factories.user("former_student", age=14)
    factories.enroll(world.course_a, former)
    c = Client()
    c.post("/accounts/login/", {"username": former.email, "password": factories.PASSWORD})
    assert signed_in_as(c) is None
    for membership in Membership.objects.filter(user=former):
        membership.is_active = False
        services.membership_save(membership=membership)
    services.enrollment_drop(enrollment=Enrollment.objects.get(user=former))
    c = Client()
    c.post("/accounts/login/", {"username": former.email, "password": factories.PASSWORD})
    assert signed_in_as(c) == former
    # Single sign-on still works for the district's people.
    Roster(world.district).link("user", "stu-a-001", world.student_a.pk)
    provider = oidc_provider(world.district, oidc)
    sso_client = Client()
    assert oidc_round(sso_client, provider, oidc, {"sub": "g", "sourced_id": "stu-a-001"}).status_code == 302
    assert signed_in_as(sso_client) == world.student_a


# --- SAML 2.0 --------------------------------------------------------------------------------------------------

@pytest.fixture
def saml():
    return SamlIdp()


def saml_provider(district, idp: SamlIdp, *, certs: str | None = None, sign_requests=False, claim="sourcedId",
                  maps_to=IdentityProvider.MapsTo.SOURCED_ID, domains="") -> IdentityProvider:
    sp_key, sp_cert = self_signed("Aula SP") if sign_requests else ("", "")
    return IdentityProvider.objects.create(
        district=district, slug="entra", kind=IdentityProvider.Kind.SAML, display_name="Entra ID (SAML)",
        saml_entity_id=idp.entity_id, saml_sso_url=idp.sso_url, saml_idp_certificates=certs or idp.cert,
        saml_sign_requests=sign_requests, saml_sp_private_key=sp_key, saml_sp_certificate=sp_cert,
        identity_claim=claim, maps_to=maps_to, email_domains=domains)


def saml_start(client: Client, provider: IdentityProvider) -> dict:
    r = client.get(f"/sso/{provider.district.slug}/{provider.slug}/", {"next": "/exams/"})
    assert r.status_code == 302 and r["Location"].startswith(provider.saml_sso_url)
    return SamlIdp.read_request(r["Location"], provider.saml_sp_certificate or None)


def saml_post(client: Client, provider: IdentityProvider, request: dict, saml_response: str):
    return client.post(f"/sso/{provider.district.slug}/{provider.slug}/saml/acs/",
                       {"SAMLResponse": saml_response, "RelayState": request["relay_state"]})


def saml_complete(client: Client, acs_response):
    assert acs_response.status_code == 200, acs_response.content[:800]
    html = acs_response.content.decode()
    url = html.split('data-testid="sso-continue"')[0].rsplit('href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    return client.get(url)


ACS = "http://testserver/sso/{d}/entra/saml/acs/"
AUDIENCE = "http://testserver/sso/{d}/entra/saml/metadata/"


def saml_answer(idp: SamlIdp, provider: IdentityProvider, request: dict, **kwargs) -> str:
    d = provider.district.slug
    args = {"acs": ACS.format(d=d), "audience": AUDIENCE.format(d=d), "in_response_to": request["id"],
            "name_id": "nameid-a", "attributes": {"sourcedId": "stu-a-001"}}
    return idp.response(**{**args, **kwargs})


def test_saml_sign_in_by_sourced_id_and_metadata(world, saml, caplog):
    caplog.set_level(logging.DEBUG)
    Roster(world.district).link("user", "stu-a-001", world.student_a.pk)
    provider = saml_provider(world.district, saml, sign_requests=True)
    client = Client()
    request = saml_start(client, provider)
    assert request["acs"] == ACS.format(d=world.district.slug) and request["signed"]
    assert request["issuer"] == AUDIENCE.format(d=world.district.slug)
    acs = saml_post(client, provider, request, saml_answer(saml, provider, request))
    assert signed_in_as(client) is None  # not yet: the browser that started it finishes it
    r = saml_complete(client, acs)
    assert r.status_code == 302 and r["Location"] == "/exams/" and signed_in_as(client) == world.student_a
    identity = ExternalIdentity.objects.get(kind="saml", issuer=saml.entity_id, subject="nameid-a")
    assert identity.user == world.student_a and identity.last_seen_at
    text = caplog.text + " ".join(str(rec.__dict__) for rec in caplog.records)
    assert "nameid-a" not in text and "stu-a-001" not in text and world.student_a.email not in text
    # SP metadata: our entity id, the ACS, our certificate; no private key.
    md = Client().get(f"/sso/{world.district.slug}/entra/saml/metadata/")
    body = md.content.decode()
    assert md.status_code == 200 and md["Content-Type"].startswith("application/samlmetadata+xml")
    assert f'entityID="{AUDIENCE.format(d=world.district.slug)}"' in body
    assert ACS.format(d=world.district.slug) in body and "PRIVATE KEY" not in body
    assert "".join(provider.saml_sp_certificate.strip().splitlines()[1:-1]) in body.replace("\n", "")


def test_saml_response_signed_by_either_certificate_during_rotation(world, saml):
    Roster(world.district).link("user", "stu-a-001", world.student_a.pk)
    new_key, new_cert = self_signed("Simulated IdP 2027")
    provider = saml_provider(world.district, saml, certs=saml.cert + "\n" + new_cert)
    for key, cert in ((saml.key, saml.cert), (new_key, new_cert)):
        client = Client()
        request = saml_start(client, provider)
        r = saml_complete(client, saml_post(client, provider, request,
                                            saml_answer(saml, provider, request, key=key, cert=cert)))
        assert r.status_code == 302 and signed_in_as(client) == world.student_a


SAML_CASES = {
    "bad_signature": ({"tamper_after_signing": True}, "Signature validation failed"),
    "other_key": ({"key": "OTHER", "cert": "OTHER"}, "Signature validation failed"),
    "unsigned": ({"sign_assertion": False}, "is not signed"),
    "response_signed_assertion_not": ({"sign_assertion": False, "sign_response": True}, "is not signed"),
    "wrong_audience": ({"audience": "https://someone-else.example.test/sp"}, "is not a valid audience"),
    "expired": ({"issue_instant": dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)}, "expired"),
    "wrong_in_response_to": ({"in_response_to": "_not_our_request"}, "does not match the ID of the AuthNRequest"),
    "unsolicited": ({"in_response_to": None}, "InResponseTo does not name our AuthnRequest"),
    "transient_nameid": ({"name_id_format": "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"}, "transient"),
}


@pytest.mark.parametrize("case", list(SAML_CASES))
def test_saml_response_checks_refuse(world, saml, case, caplog):
    Roster(world.district).link("user", "stu-a-001", world.student_a.pk)
    provider = saml_provider(world.district, saml)
    client = Client()
    request = saml_start(client, provider)
    kwargs, detail = SAML_CASES[case]
    if kwargs.get("key") == "OTHER":
        kwargs = dict(zip(("key", "cert"), self_signed("Not the IdP"), strict=True))
    r = saml_post(client, provider, request, saml_answer(saml, provider, request, **kwargs))
    assert refused_reason(r) == ("no_identifier" if case == "transient_nameid" else "invalid_response")
    assert detail in refusal_detail(caplog)
    assert signed_in_as(client) is None and not ExternalIdentity.objects.filter(kind="saml").exists()


def test_saml_replayed_assertion_and_response_refused(world, saml):
    Roster(world.district).link("user", "stu-a-001", world.student_a.pk)
    provider = saml_provider(world.district, saml)
    client = Client()
    first = saml_start(client, provider)
    answer = saml_answer(saml, provider, first, assertion_id="_assertion-once")
    assert saml_complete(client, saml_post(client, provider, first, answer)).status_code == 302
    # The same Response posted again: its AuthnRequest was answered already.
    attacker = Client()
    assert refused_reason(saml_post(attacker, provider, first, answer)) == "expired_request"
    # The same assertion id inside an answer to a new request: refused as a replay.
    second = saml_start(attacker, provider)
    replay = saml_answer(saml, provider, second, assertion_id="_assertion-once")
    assert refused_reason(saml_post(attacker, provider, second, replay)) == "replayed"
    assert signed_in_as(attacker) is None


def test_saml_unsolicited_assertion_in_a_forged_envelope_is_refused(world, saml, caplog):
    """The Response envelope is not signed (only the assertion must be): its InResponseTo proves nothing. An
    IdP-initiated assertion (no InResponseTo in its SubjectConfirmationData) wrapped in an envelope naming the
    holder's own AuthnRequest is refused, and so is the same assertion once it has been refused."""
    Roster(world.district).link("user", "stu-a-001", world.student_a.pk)
    provider = saml_provider(world.district, saml)
    attacker = Client()
    request = saml_start(attacker, provider)
    forged = saml_answer(saml, provider, request, in_response_to=None, envelope_in_response_to=request["id"])
    r = saml_post(attacker, provider, request, forged)
    assert refused_reason(r) == "invalid_response"
    assert "signed assertion's InResponseTo does not name our AuthnRequest" in refusal_detail(caplog)
    assert signed_in_as(attacker) is None and not ExternalIdentity.objects.filter(kind="saml").exists()
    # An assertion signed for another request, re-enveloped for ours: refused too.
    request = saml_start(attacker, provider)
    other = rewrap(saml_answer(saml, provider, request, in_response_to="_someone_elses_request"), request["id"])
    assert refused_reason(saml_post(attacker, provider, request, other)) == "invalid_response"


def test_saml_refused_assertion_cannot_come_back_in_another_envelope(world, saml):
    Roster(world.district).link("user", "stu-a-001", world.student_a.pk)
    provider = saml_provider(world.district, saml)
    attacker = Client()
    first = saml_start(attacker, provider)
    unsolicited = saml_answer(saml, provider, first, in_response_to=None, assertion_id="_unsolicited-once")
    assert refused_reason(saml_post(attacker, provider, first, unsolicited)) == "invalid_response"
    # The same signed assertion, its envelope now naming a request of the attacker's: already used.
    second = saml_start(attacker, provider)
    r = saml_post(attacker, provider, second, rewrap(unsolicited, second["id"]))
    assert refused_reason(r) == "replayed"
    assert signed_in_as(attacker) is None and not ExternalIdentity.objects.filter(kind="saml").exists()


def test_saml_provider_with_the_default_claim_maps_the_nameid(world, saml):
    """`identity_claim` defaults to "sub" (an OIDC claim); a SAML provider saved with it maps the NameID."""
    provider = IdentityProvider.objects.create(
        district=world.district, slug="entra", kind=IdentityProvider.Kind.SAML, display_name="Entra ID (SAML)",
        saml_entity_id=saml.entity_id, saml_sso_url=saml.sso_url, saml_idp_certificates=saml.cert,
        maps_to=IdentityProvider.MapsTo.EMAIL, email_domains="example.test")
    assert provider.identity_claim == "sub" and provider.mapped_claim == "NameID"
    client = Client()
    request = saml_start(client, provider)
    acs = saml_post(client, provider, request, saml_answer(saml, provider, request, name_id=world.teacher_a.email,
                                                           attributes={}))
    assert saml_complete(client, acs).status_code == 302 and signed_in_as(client) == world.teacher_a
    # Saved through the service (the admin's write path), it says so.
    sso_services.identity_provider_save(provider=provider)
    provider.refresh_from_db()
    assert provider.identity_claim == "NameID"


def test_saml_answer_finished_only_in_the_browser_that_started_it(world, saml):
    Roster(world.district).link("user", "stu-a-001", world.student_a.pk)
    provider = saml_provider(world.district, saml)
    victim, attacker = Client(), Client()
    request = saml_start(attacker, provider)
    acs = saml_post(victim, provider, request, saml_answer(saml, provider, request))
    r = saml_complete(victim, acs)
    assert refused_reason(r) == "expired_request" and signed_in_as(victim) is None


def test_saml_unknown_other_district_and_disabled(world, saml):
    Roster(world.other_district).link("user", "stu-c-001", world.student_c.pk)
    Roster(world.district).link("user", "stu-b-001", world.student_b.pk)
    provider = saml_provider(world.district, saml)
    for attributes, reason in (({"sourcedId": "nobody"}, "unknown_person"),
                               ({"sourcedId": "stu-c-001"}, "other_district")):
        client = Client()
        request = saml_start(client, provider)
        r = saml_post(client, provider, request, saml_answer(saml, provider, request, attributes=attributes))
        assert refused_reason(r) == reason and signed_in_as(client) is None
    world.student_b.is_active = False
    world.student_b.save()
    client = Client()
    request = saml_start(client, provider)
    r = saml_post(client, provider, request, saml_answer(saml, provider, request,
                                                         attributes={"sourcedId": "stu-b-001"}))
    assert refused_reason(r) == "disabled"


def test_saml_sign_in_by_email_nameid(world, saml):
    provider = saml_provider(world.district, saml, claim="NameID", maps_to=IdentityProvider.MapsTo.EMAIL,
                             domains="example.test")
    client = Client()
    request = saml_start(client, provider)
    acs = saml_post(client, provider, request, saml_answer(saml, provider, request, name_id=world.teacher_a.email,
                                                           attributes={}))
    assert saml_complete(client, acs).status_code == 302 and signed_in_as(client) == world.teacher_a


def test_xmlsec_and_lxml_share_one_libxml2():
    """The known trap: xmlsec refuses to work when lxml carries another libxml2 (docs/sso.md)."""
    import lxml.etree
    import xmlsec

    assert xmlsec.get_libxml_version() == lxml.etree.LIBXML_VERSION[:3]
    assert settings.AULA_SECRET_KEYS  # the key list the encrypted fields use is configured in tests


def test_admin_adds_a_saml_provider_with_write_only_sp_key(world, saml):
    admin = factories.user("root", superuser=True)
    client = Client()
    client.force_login(admin)
    sp_key, sp_cert = self_signed("Aula SP")
    form = {"district": world.district.pk, "slug": "adfs", "kind": "saml", "display_name": "District ADFS",
            "enabled": "on", "oidc_issuer": "", "oidc_client_id": "", "oidc_client_secret": "",
            "oidc_scopes": "openid email profile", "saml_entity_id": saml.entity_id, "saml_sso_url": saml.sso_url,
            "saml_idp_certificates": "not a certificate", "saml_sign_requests": "on", "saml_sp_private_key": sp_key,
            "saml_sp_certificate": sp_cert, "identity_claim": "sourcedId", "maps_to": "sourced_id",
            "lti_issuer": "", "email_domains": ""}
    r = client.post("/admin/classrooms/identityprovider/add/", form)
    assert r.status_code == 200 and "Each certificate must be a PEM certificate." in r.content.decode()
    assert sp_key not in r.content.decode()  # a refused form does not echo the key either
    r = client.post("/admin/classrooms/identityprovider/add/", {**form, "saml_idp_certificates": saml.cert})
    assert r.status_code == 302, r.content.decode()[:3000]
    provider = IdentityProvider.objects.get(slug="adfs")
    with connection.cursor() as cur:
        cur.execute("SELECT saml_sp_private_key FROM classrooms_identityprovider WHERE id = %s", [provider.pk])
        stored = cur.fetchone()[0]
    assert stored.startswith("fernet:") and "PRIVATE KEY" not in stored
    page = client.get(f"/admin/classrooms/identityprovider/{provider.pk}/change/").content.decode()
    body = "".join(sp_key.strip().splitlines()[1:-1])
    assert body[:40] not in page and "Stored: yes." in page
    # Removing the stored credentials on request.
    r = client.post(f"/admin/classrooms/identityprovider/{provider.pk}/change/",
                    {**form, "saml_idp_certificates": saml.cert, "saml_sp_private_key": "", "saml_sign_requests": "",
                     "clear_credentials": "on"})
    assert r.status_code == 302
    provider.refresh_from_db()
    assert provider.saml_sp_private_key == ""
