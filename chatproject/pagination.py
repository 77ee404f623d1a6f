"""The API's cursor pagination: every page a keyset range, and bad paging input a 400.

DRF's `CursorPagination` silently replaces a bad `limit` with the default page size, answers
404 for a garbled cursor and takes the last of a repeated one; here all three are 400s naming
the parameter, and the schema states the limit's range.
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, serializers
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request

from chatproject.query import single_values


class StrictCursorPagination(CursorPagination):
    page_size_query_param = "limit"
    page_size = 50
    max_page_size = 200

    def get_page_size(self, request: Request) -> int:
        limit = serializers.IntegerField(
            min_value=1, max_value=self.max_page_size, default=self.page_size
        )
        params = single_values(request, [self.page_size_query_param, self.cursor_query_param])
        raw = params.get(self.page_size_query_param, serializers.empty)
        try:
            return limit.run_validation(raw)
        except serializers.ValidationError as exc:
            raise exceptions.ValidationError({self.page_size_query_param: exc.detail}) from exc

    def decode_cursor(self, request: Request) -> Cursor | None:
        try:
            return super().decode_cursor(request)
        except exceptions.NotFound as exc:
            raise exceptions.ValidationError({"cursor": [self.invalid_cursor_message]}) from exc

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(
                    minimum=1, maximum=self.max_page_size, default=self.page_size
                )
        return parameters
