"""The OpenAPI schema's error responses, documented once for every operation.

drf-spectacular documents only the success response of each operation; clients (and the
schemathesis run in tests_adversarial/) also rely on the errors: 400 with field errors for
bad input, 401 for a missing or invalid token (or bad credentials at login), 404 for an id
that does not exist or is not the caller's, 415 for a body that is not JSON, 429 past a
throttle. Which of these an operation can answer follows from its shape, so they are added
here rather than repeated in every view.
"""

from __future__ import annotations

from typing import Any

from django.core.validators import RegexValidator
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from rest_framework_simplejwt.views import TokenViewBase

_DETAIL = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
ERROR_SCHEMAS: dict[str, tuple[str, dict[str, Any]]] = {
    "ValidationErrors": (
        "Bad input: each field with its errors (`non_field_errors` or `detail` when no "
        "single field is at fault).",
        {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {
                "oneOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"type": "string"}},
                    {"type": "object"},
                ]
            },
        },
    ),
    "ErrorDetail": ("An error with its explanation.", _DETAIL),
}
ERRORS = {
    "400": ("ValidationErrors", "Invalid input."),
    "401": ("ErrorDetail", "Missing, invalid or expired credentials."),
    "404": ("ErrorDetail", "No such object, or not one of the caller's (never told apart)."),
    "415": ("ErrorDetail", "The body is not `application/json`."),
    "429": ("ErrorDetail", "Too many requests from this client; retry later."),
}


class AutoSchema(SpectacularAutoSchema):
    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        responses = operation["responses"]
        for code in self._error_codes(operation):
            responses.setdefault(code, self._error_response(code))
        return operation

    def _error_codes(self, operation: dict[str, Any]) -> list[str]:
        locations = {parameter["in"] for parameter in operation.get("parameters", [])}
        has_body = "requestBody" in operation
        codes = []
        if has_body or "query" in locations:
            codes.append("400")
        checks_credentials = isinstance(self.view, TokenViewBase) or getattr(
            self.view, "action", None
        ) in getattr(self.view, "credential_actions", ())
        if operation.get("security") or checks_credentials:
            codes.append("401")  # A token is required, or credentials are what is checked.
        if "path" in locations:
            codes.append("404")
        if has_body:
            codes.append("415")
        if self.view.get_throttles():
            codes.append("429")
        return codes

    def _error_response(self, code: str) -> dict[str, Any]:
        name, description = ERRORS[code]
        component_description, schema = ERROR_SCHEMAS[name]
        component = ResolvedComponent(
            name=name,
            type=ResolvedComponent.SCHEMA,
            object=name,
            schema={**schema, "description": component_description},
        )
        self.registry.register_on_missing(component)
        return {
            "content": {"application/json": {"schema": component.ref}},
            "description": description,
        }


class JWTScheme(SimpleJWTScheme):
    """Our authentication class (accounts/auth.py) is simplejwt's plus the token version
    check: the same bearer scheme ("jwtAuth")."""

    target_class = "accounts.auth.JWTAuthentication"


# --- Text rules that the field classes enforce, stated in the schema ----------------------------

# Every character for which str.isspace() is true (what str.strip() removes), as a regex class.
_WHITESPACE = (
    r"\t\n\u000b\u000c\r\u001c-\u001f \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029"
    r"\u202f\u205f\u3000"
)
# "+", not "*": drf-spectacular offers "" through a `oneOf` branch of its own for blank-allowed
# fields, and the two branches must not both match it.
NO_NUL_PATTERN = r"^[^\u0000]+$"
# No NUL, and at least one character that is not white space.
SOME_TEXT_PATTERN = rf"^[^\u0000]*[^{_WHITESPACE}\u0000][^\u0000]*$"


class StrictCharFieldExtension(OpenApiSerializerFieldExtension):
    """Strings of ours refuse NUL (PostgreSQL cannot store it), and those that trim white
    space refuse white space alone: say so with a pattern."""

    target_class = "chatproject.fields.StrictCharField"
    match_subclasses = True
    pattern = NO_NUL_PATTERN

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        # Private by name, but the way OpenApiSerializerFieldExtension's docstring gives to start
        # from the default mapping (docs/internals.md, SP-1).
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        # A field with a regex validator of its own (usernames) has that pattern instead.
        if not any(isinstance(check, RegexValidator) for check in self.target.validators):
            schema["pattern"] = self._pattern()
        return schema

    def _pattern(self) -> str:
        # A field that trims white space and refuses blank refuses white space alone too.
        if self.target.trim_whitespace and not self.target.allow_blank:
            return SOME_TEXT_PATTERN
        return self.pattern


class MessageTextFieldExtension(StrictCharFieldExtension):
    """A message's text: no NUL, and not only white space."""

    target_class = "messaging.serializers.MessageTextField"
    priority = 1
    pattern = SOME_TEXT_PATTERN


# --- Postprocessing (SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]) --------------------------------

# drf-spectacular makes every field of a PATCH body optional, as DRF's partial updates are. A
# message edit is not partial: its one field is required (messaging.views, `message`).
WHOLE_PATCH_BODIES = {"PatchedMessageEditRequest": ["text"]}


def require_whole_patch_bodies(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    schemas = result.get("components", {}).get("schemas", {})
    for name, required in WHOLE_PATCH_BODIES.items():
        if name in schemas:
            schemas[name]["required"] = required
    for operations in result.get("paths", {}).values():
        body = operations.get("patch", {}).get("requestBody", {})
        refs = {
            media.get("schema", {}).get("$ref", "") for media in body.get("content", {}).values()
        }
        if any(ref.rsplit("/", 1)[-1] in WHOLE_PATCH_BODIES for ref in refs):
            body["required"] = True
    return result
