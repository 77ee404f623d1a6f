from django.contrib.auth.models import AbstractUser


class User(AbstractUser):
    """The service's user. A model of our own from the first migration, so it can grow."""
