from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction

from accounts.models import User
from chatproject.errors import ApplicationError


def user_register(*, username: str, password: str, email: str = "") -> User:
    """Create a user after Django's password validators accept the password."""
    if User.objects.filter(username__iexact=username).exists():
        raise ApplicationError("A user with that username already exists.", field="username")
    candidate = User(username=username, email=email)
    try:
        validate_password(password, user=candidate)
    except DjangoValidationError as exc:
        raise ApplicationError(" ".join(exc.messages), field="password") from exc
    candidate.set_password(password)
    try:
        with transaction.atomic():
            candidate.save()
    except IntegrityError as exc:  # Lost a race with a concurrent registration.
        raise ApplicationError(
            "A user with that username already exists.", field="username"
        ) from exc
    return candidate
