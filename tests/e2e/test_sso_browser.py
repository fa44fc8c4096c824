"""Single sign-on in a real browser: Chromium on the sign-in page of a real uvicorn process, through the
simulated OIDC provider (tests/classrooms/idp_sim.py, a real HTTP server) and back, signed in."""

from __future__ import annotations

import pytest
from django.urls import NoReverseMatch, reverse

from classrooms.models import ExternalIdentity, IdentityProvider
from compliance.rostering import Roster
from tests import factories
from tests.classrooms.idp_sim import OidcProvider
from tests.e2e.browser import browser

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _sso_routes_installed():
    try:
        reverse("sso:start")  # the server process runs config.urls, which includes classrooms.sso_urls
    except NoReverseMatch:
        pytest.fail("config/urls.py does not include classrooms.sso_urls under sso/")


def test_student_signs_in_with_the_district_identity_provider(world, server_factory):
    world.district.local_passwords = False  # only the school account works for this district
    world.district.save()
    Roster(world.district).link("user", "stu-a-001", world.student_a.pk)
    with OidcProvider() as idp:
        IdentityProvider.objects.create(
            district=world.district, slug="google", kind=IdentityProvider.Kind.OIDC,
            display_name="Northside Google", oidc_issuer=idp.issuer, oidc_client_id=idp.client_id,
            oidc_client_secret=idp.client_secret, identity_claim="sourced_id",
            maps_to=IdentityProvider.MapsTo.SOURCED_ID, email_domains="example.test")
        idp.next_claims = {"sub": "google-a", "sourced_id": "stu-a-001", "email": world.student_a.email,
                           "email_verified": True}
        server = server_factory(kind="uvicorn")
        with browser() as b:
            page = b.new_page()
            page.set_default_timeout(15000)
            # The password is refused with the reason...
            page.goto(f"{server.origin}/accounts/login/")
            page.get_by_label("Email or username").fill(world.student_a.email)
            page.get_by_label("Password").fill(factories.PASSWORD)
            page.get_by_role("button", name="Sign in", exact=True).click()
            assert "identity provider" in page.get_by_test_id("login-sso-required").inner_text()
            # ...the school account box finds the district by the email's domain and goes to the IdP and back.
            page.get_by_label("Your school email or district").fill(world.student_a.email)
            page.get_by_role("button", name="Continue with your school account").click()
            page.wait_for_url(f"{server.origin}/")
            assert page.locator(".who").inner_text() == world.student_a.public_name
            assert page.get_by_test_id("session-link").all_inner_texts() == ["Live A"]
            assert idp.token_requests[-1]["secret_ok"] and idp.token_requests[-1]["code_verifier"]

            # Someone the district never rostered gets the refusal page, and no account.
            idp.next_claims = {"sub": "google-new", "sourced_id": "not-rostered"}
            other = b.new_page()
            other.goto(f"{server.origin}/accounts/login/?district={world.district.slug}")
            other.get_by_role("link", name="Sign in with Northside Google").click()
            refusal = other.get_by_test_id("sso-refused")
            assert "no account for you" in refusal.inner_text()
            assert refusal.get_attribute("data-reason") == "unknown_person"
        assert ExternalIdentity.objects.filter(kind="oidc", subject="google-a", user=world.student_a).exists()
        assert not ExternalIdentity.objects.filter(subject="google-new").exists()
