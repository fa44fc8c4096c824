"""API authentication, in its own module: DRF imports authentication classes while rest_framework.views
is still loading, so this module must not import views (or anything that does)."""

from oauth2_provider.contrib.rest_framework import OAuth2Authentication
from rest_framework import exceptions


class HeaderOnlyOAuth2Authentication(OAuth2Authentication):
    """OAuth2 bearer tokens only from the Authorization header.

    oauthlib also accepts `?access_token=` in the query string and in form bodies, which puts tokens in
    access logs and browser history; such requests are refused outright.
    """

    def authenticate(self, request):
        if "access_token" in request.query_params or "access_token" in getattr(request._request, "POST", {}):
            raise exceptions.AuthenticationFailed(
                "Send the access token in the Authorization header, not in the URL or body.",
                code="token_in_url",
            )
        return super().authenticate(request)
