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


ERROR_STATUSES = {
    "400": "Invalid query parameters or body (`details` names the fields).",
    "401": "No token, an unknown or expired token, or a token outside the Authorization header.",
    "403": "The token lacks the scope, or the caller lacks the role.",
    "404": "No such object, or another district's object (indistinguishable on purpose).",
    "405": "The method is not allowed on this path.",
    "429": "Over the client's rate limit: retry after `Retry-After` seconds.",
}


def add_error_responses(result, generator, request, public):
    """drf-spectacular post-processing hook: the one error shape, and the error statuses every operation can
    answer with, documented on every operation (docs/api.md lists when each happens)."""
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = {
        "type": "object", "required": ["error"], "additionalProperties": False,
        "properties": {"error": {
            "type": "object", "required": ["code", "message", "details", "request_id"],
            "additionalProperties": False,
            "properties": {
                "code": {"type": "string", "example": "not_found"},
                "message": {"type": "string"},
                "details": {"type": "object", "additionalProperties": True},
                "request_id": {"type": "string"},
            }}},
    }
    ref = {"$ref": "#/components/schemas/Error"}
    for item in result.get("paths", {}).values():
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            for status, description in ERROR_STATUSES.items():
                existing = responses.get(status)
                if existing is None or "content" not in existing:
                    headers = {"Retry-After": {"schema": {"type": "integer", "minimum": 1}, "required": True}} \
                        if status == "429" else None
                    responses[status] = {"description": (existing or {}).get("description") or description,
                                         "content": {"application/json": {"schema": ref}},
                                         **({"headers": headers} if headers else {})}
    return result
