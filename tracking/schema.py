"""drf-spectacular: describe `APIKeyAuthentication` as an HTTP bearer scheme."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class APIKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "tracking.auth.APIKeyAuthentication"
    name = "ServiceAPIKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A per-service API key from `python manage.py create_api_key NAME`.",
        }
