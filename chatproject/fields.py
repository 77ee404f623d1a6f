"""Serializer fields shared by the apps' input serializers."""

from typing import Any

from rest_framework import serializers


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers, booleans and the like instead of converting them.

    It also refuses NUL characters (DRF's default), which PostgreSQL cannot store.
    """

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)
