from typing import Any

from django.contrib.auth.validators import UnicodeUsernameValidator
from rest_framework import serializers
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer, TokenRefreshSerializer

from accounts.auth import JWTAuthentication
from accounts.models import User
from accounts.tokens import RefreshToken
from chatproject.fields import StrictCharField


class UserSerializer(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "username"]
        read_only_fields = fields


class PeopleSearchSerializer(serializers.Serializer):
    search = StrictCharField(
        max_length=150, trim_whitespace=False, help_text="The start of a username, any case."
    )
    limit = serializers.IntegerField(min_value=1, max_value=50, default=20)
    cursor = serializers.CharField(required=False, help_text="From `next`.")


class RegisterSerializer(serializers.Serializer):
    username = StrictCharField(max_length=150, validators=[UnicodeUsernameValidator()])
    password = StrictCharField(max_length=128, write_only=True, trim_whitespace=False)
    email = serializers.EmailField(required=False, allow_blank=True, default="")


class LoginSerializer(TokenObtainPairSerializer):
    """A username and its password."""

    # simplejwt's login (SIMPLE_JWT's TOKEN_OBTAIN_SERIALIZER), issuing our tokens, which carry
    # the user's token version.
    token_class = RefreshToken

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # simplejwt's fields trim white space, the password's too: a password registered with a
        # leading or trailing space (kept as given) could never log in. The password is taken as
        # given, as registration and the password change take it.
        self.fields[self.username_field] = StrictCharField(write_only=True)
        self.fields["password"] = StrictCharField(
            write_only=True, trim_whitespace=False, style={"input_type": "password"}
        )


class RefreshSerializer(TokenRefreshSerializer):
    """A refresh token from a login."""

    # simplejwt's refresh (SIMPLE_JWT's TOKEN_REFRESH_SERIALIZER) with the checks of an access
    # token: the user exists, is active, and the token's version is the current one. Refresh
    # tokens are not rotated (ROTATE_REFRESH_TOKENS stays off: this issues no new one).
    refresh = StrictCharField()
    token_class = RefreshToken

    def validate(self, attrs: dict[str, Any]) -> dict[str, str]:
        refresh = self.token_class(attrs["refresh"])  # TokenError: invalid, expired, logged out.
        JWTAuthentication().get_user(refresh)  # AuthenticationFailed: no such user, revoked.
        return {"access": str(refresh.access_token)}


class TokenPairSerializer(serializers.Serializer):
    """The answer of login: what the response looks like, for the schema."""

    access = serializers.CharField()
    refresh = serializers.CharField()


class AccessTokenSerializer(serializers.Serializer):
    """The answer of a token refresh, for the schema."""

    access = serializers.CharField()


class LogoutSerializer(serializers.Serializer):
    """The refresh token of the session to end."""

    refresh = StrictCharField(help_text="The refresh token to end.")


class PasswordChangeSerializer(serializers.Serializer):
    """The current password, and the new one (Django's password validators apply)."""

    old_password = StrictCharField(max_length=4096, write_only=True, trim_whitespace=False)
    new_password = StrictCharField(max_length=128, write_only=True, trim_whitespace=False)
