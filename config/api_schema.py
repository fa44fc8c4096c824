"""OpenAPI description of Aula's header-only OAuth2 authentication (client credentials flow)."""

from drf_spectacular.contrib.django_oauth_toolkit import DjangoOAuthToolkitScheme


class HeaderOnlyOAuth2Scheme(DjangoOAuthToolkitScheme):
    target_class = "config.api_auth.HeaderOnlyOAuth2Authentication"
    name = "oauth2"
    priority = 1

    def get_security_requirement(self, auto_schema):
        requirement = super().get_security_requirement(auto_schema)
        view = auto_schema.view
        required = getattr(view, "method_scopes", {}).get(auto_schema.method) or getattr(view, "base_scopes", None)
        if requirement is None and required:
            return {self.name: list(required)}
        return requirement
