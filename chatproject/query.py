"""Query strings read as one value per parameter.

Django's `QueryDict.get` quietly takes the last of a repeated parameter (`?limit=5&limit=2`) and
`QueryDict.dict()` does the same; an API that answers for a value the client may not have meant
hides the client's bug. A parameter the endpoint reads, given twice, is a 400 naming it.
"""

from __future__ import annotations

from collections.abc import Iterable

from rest_framework.exceptions import ValidationError
from rest_framework.request import Request

GIVEN_TWICE = "Give this parameter once."


def single_values(request: Request, names: Iterable[str]) -> dict[str, str]:
    """The query parameters as a plain dict (so DRF reads "limit=" as given and empty, not
    absent, as it would from a QueryDict), after refusing any of `names` given more than once."""
    params = request.query_params
    repeated = {name: [GIVEN_TWICE] for name in names if len(params.getlist(name)) > 1}
    if repeated:
        raise ValidationError(repeated)
    return params.dict()
