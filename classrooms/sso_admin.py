"""Admin for districts' identity providers (superusers only). The client secret and the SP private key are
write-only: the form never shows them back; leaving the field empty keeps the stored value."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from django import forms
from django.contrib import admin
from django.db import models

from classrooms import sso_services
from classrooms.admin import SuperuserOnlyAdmin
from classrooms.models import IdentityProvider
from classrooms.selectors import lti_platform_count


class WriteOnlyTextarea(forms.Textarea):
    """A textarea that never renders a value: neither the stored key nor one typed into a refused form."""

    def format_value(self, value):
        return None


class WriteOnlyField(forms.CharField):
    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("strip", True)
        super().__init__(widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}), **kwargs)


def _https_urls(field, **kwargs):
    """IdP endpoints are https: a URL typed without a scheme gets https:// (Django 6's default)."""
    if isinstance(field, models.URLField):
        kwargs["assume_scheme"] = "https"
    return field.formfield(**kwargs)


class IdentityProviderForm(forms.ModelForm):
    oidc_client_secret = WriteOnlyField(label="OIDC client secret", help_text="Write-only. Empty keeps the "
                                        "stored secret.")
    saml_sp_private_key = WriteOnlyField(label="SAML SP private key (PEM)", help_text="Write-only. Empty keeps "
                                         "the stored key.")
    clear_credentials = forms.BooleanField(required=False, label="Remove the stored secret and key")

    class Meta:
        model = IdentityProvider
        formfield_callback = _https_urls
        fields = ["district", "slug", "kind", "display_name", "enabled", "oidc_issuer", "oidc_client_id",
                  "oidc_client_secret", "oidc_scopes", "saml_entity_id", "saml_sso_url", "saml_idp_certificates",
                  "saml_sign_requests", "saml_sp_private_key", "saml_sp_certificate", "identity_claim", "maps_to",
                  "lti_issuer", "email_domains"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # PasswordInput is a single line: a PEM key needs a textarea (still never filled in).
        self.fields["saml_sp_private_key"].widget = WriteOnlyTextarea(attrs={"rows": 4, "autocomplete": "off"})
        instance = self.instance
        for name in ("oidc_client_secret", "saml_sp_private_key"):
            stored = bool(getattr(instance, name, "")) if instance.pk else False
            self.fields[name].help_text += " Stored: yes." if stored else " Stored: no."

    def clean_saml_idp_certificates(self):
        value = self.cleaned_data.get("saml_idp_certificates", "")
        for pem in IdentityProvider(saml_idp_certificates=value).idp_certificates:
            try:
                x509.load_pem_x509_certificate(pem.encode())
            except ValueError:
                raise forms.ValidationError("Each certificate must be a PEM certificate.") from None
        return value

    def clean_saml_sp_certificate(self):
        value = self.cleaned_data.get("saml_sp_certificate", "")
        if value:
            try:
                x509.load_pem_x509_certificate(value.encode())
            except ValueError:
                raise forms.ValidationError("Not a PEM certificate.") from None
        return value

    def clean_saml_sp_private_key(self):
        value = self.cleaned_data.get("saml_sp_private_key", "")
        if value:
            try:
                load_pem_private_key(value.encode(), password=None)
            except (ValueError, TypeError):
                raise forms.ValidationError("Not an unencrypted PEM private key.") from None
        return value

    def clean(self):
        data = super().clean()
        kind = data.get("kind")
        required = {IdentityProvider.Kind.OIDC: ["oidc_issuer", "oidc_client_id"],
                    IdentityProvider.Kind.SAML: ["saml_entity_id", "saml_sso_url", "saml_idp_certificates"]}
        for name in required.get(kind, []):
            if not data.get(name):
                self.add_error(name, "Required for this kind of provider.")
        if kind == IdentityProvider.Kind.OIDC and not data.get("oidc_client_secret") and not (
                self.instance.pk and self.instance.oidc_client_secret and not data.get("clear_credentials")):
            self.add_error("oidc_client_secret", "Required for an OpenID Connect provider.")
        if data.get("maps_to") == IdentityProvider.MapsTo.EMAIL and not data.get("email_domains"):
            self.add_error("email_domains", "Email mapping needs the district's email domains.")
        if (data.get("maps_to") == IdentityProvider.MapsTo.LTI_SUBJECT and not data.get("lti_issuer")
                and data.get("district") and lti_platform_count(data["district"]) > 1):
            self.add_error("lti_issuer", "This district has several LTI platforms: name the one whose subjects "
                                         "this provider asserts (its issuer).")
        return data

    def _post_clean(self):
        # Empty write-only fields keep what is stored (unless clearing was asked for).
        keep = {}
        if self.instance.pk and not self.cleaned_data.get("clear_credentials"):
            for name in ("oidc_client_secret", "saml_sp_private_key"):
                if not self.cleaned_data.get(name):
                    keep[name] = getattr(self.instance, name)
        super()._post_clean()
        for name, value in keep.items():
            setattr(self.instance, name, value)


@admin.register(IdentityProvider)
class IdentityProviderAdmin(SuperuserOnlyAdmin):
    form = IdentityProviderForm
    list_display = ["display_name", "district", "kind", "maps_to", "enabled"]
    list_filter = ["kind", "enabled"]
    search_fields = ["display_name", "district__name", "slug"]
    autocomplete_fields = ["district"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}  # IdP endpoints are https
    fieldsets = [
        (None, {"fields": ["district", "slug", "kind", "display_name", "enabled"]}),
        ("OpenID Connect", {"fields": ["oidc_issuer", "oidc_client_id", "oidc_client_secret", "oidc_scopes"]}),
        ("SAML 2.0", {"fields": ["saml_entity_id", "saml_sso_url", "saml_idp_certificates", "saml_sign_requests",
                                 "saml_sp_private_key", "saml_sp_certificate"]}),
        ("Who is signing in", {"fields": ["identity_claim", "maps_to", "lti_issuer", "email_domains"]}),
        ("Credentials", {"fields": ["clear_credentials"]}),
    ]

    def save_model(self, request, obj, form, change):
        sso_services.identity_provider_save(provider=obj, actor=request.user)
