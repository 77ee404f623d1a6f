from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken
from rest_framework_simplejwt.tokens import UntypedToken

from accounts.models import User
from accounts.tokens import RefreshToken
from chatproject.errors import ApplicationError


def user_register(*, username: str, password: str, email: str = "") -> User:
    """Create a user after Django's password validators accept the password."""
    if User.objects.filter(username__iexact=username).exists():
        raise ApplicationError("A user with that username already exists.", field="username")
    candidate = User(username=username, email=email)
    try:
        validate_password(password, user=candidate)
    except DjangoValidationError as exc:
        raise ApplicationError(exc.messages, field="password") from exc
    candidate.set_password(password)
    try:
        with transaction.atomic():
            candidate.save()
    except IntegrityError as exc:  # Lost a race with a concurrent registration.
        raise ApplicationError(
            "A user with that username already exists.", field="username"
        ) from exc
    return candidate


def user_password_change(*, user: User, old_password: str, new_password: str) -> User:
    """Set a new password once the old one is given and Django's validators accept the new one.
    Every token issued before is refused from the commit on, and every socket of the user is
    told to close (`User.revoke_sessions`); tokens from a later login work at once."""
    with transaction.atomic():
        # Locked, so two changes at once are counted one after the other.
        locked = User.objects.select_for_update().get(pk=user.pk)
        if not locked.check_password(old_password):
            raise ApplicationError("The current password is not correct.", field="old_password")
        try:
            validate_password(new_password, user=locked)
        except DjangoValidationError as exc:
            raise ApplicationError(exc.messages, field="new_password") from exc
        locked.set_password(new_password)
        locked.save(update_fields=["password"])
        locked.revoke_sessions()
    return locked


def user_logout(*, refresh: str) -> None:
    """End a refresh token: /users/token/refresh refuses it from then on. Ending one that was
    already ended changes nothing and is no error (a client retrying after a lost answer).
    TokenError for anything that is not a valid refresh token of ours."""
    try:
        token = RefreshToken(refresh)
    except TokenError:
        if _logged_out_refresh_token(refresh):
            return
        raise
    token.blacklist()  # get_or_create: two logouts at once both succeed.


def _logged_out_refresh_token(raw: str) -> bool:
    """A refresh token of ours, still within its lifetime, that is on the blacklist."""
    try:
        token = UntypedToken(raw)  # Signature and expiry checked; any type.
    except TokenError:
        return False
    return (
        token.get(api_settings.TOKEN_TYPE_CLAIM) == RefreshToken.token_type
        and BlacklistedToken.objects.filter(token__jti=token.get(api_settings.JTI_CLAIM)).exists()
    )
