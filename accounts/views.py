from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import Serializer
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError

from accounts.models import User
from accounts.serializers import (
    AccessTokenSerializer,
    LoginSerializer,
    LogoutSerializer,
    PasswordChangeSerializer,
    PeopleSearchSerializer,
    RefreshSerializer,
    RegisterSerializer,
    TokenPairSerializer,
    UserSerializer,
)
from accounts.services import user_logout, user_password_change, user_register
from accounts.throttles import ClientIpThrottle
from chatproject.pagination import StrictCursorPagination
from chatproject.query import single_values
from chatproject.throttling import ScopedRateThrottle

# The actions that take no access token: a stale or garbage Authorization header must not
# turn a login, a refresh or a logout into a 401 of its own.
NO_TOKEN = {"permission_classes": [AllowAny], "authentication_classes": []}


_PEOPLE_QUERY_FIELDS = list(PeopleSearchSerializer().fields)


class PeoplePagination(StrictCursorPagination):
    """By username (case-insensitive), a cursor so every page is an index range."""

    ordering = ("username_key", "id")
    page_size = 20
    max_page_size = 50

    def paginate_queryset(self, queryset, request, view=None):  # type: ignore[no-untyped-def]
        query = PeopleSearchSerializer(data=single_values(request, _PEOPLE_QUERY_FIELDS))
        query.is_valid(raise_exception=True)
        people = User.objects.search(query.validated_data["search"]).only("id", "username")
        return super().paginate_queryset(people, request, view)


class UserViewSet(viewsets.GenericViewSet):
    """Registration, sessions (login, refresh, logout) and the caller's own account."""

    serializer_class = UserSerializer
    pagination_class = PeoplePagination  # The people search (`list`).
    throttle_scope: str | None = None  # Set per action below.
    # The actions that check credentials answer 401 on bad ones (`openapi.AutoSchema`).
    credential_actions = ("login", "token_refresh", "logout")

    def get_authenticate_header(self, request: Request) -> str:
        """What a 401 carries in WWW-Authenticate. DRF turns a 401 into a 403 when no
        authenticator offers one, which the token-less actions below would be."""
        return 'Bearer realm="api"'

    @extend_schema(request=RegisterSerializer, responses={201: UserSerializer}, auth=[])
    @action(
        detail=False,
        methods=["post"],
        throttle_classes=[ClientIpThrottle],
        throttle_scope="register",
        **NO_TOKEN,
    )
    def register(self, request: Request) -> Response:
        serializer = RegisterSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = user_register(**serializer.validated_data)
        return Response(UserSerializer(user).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=LoginSerializer,
        responses={200: TokenPairSerializer},
        auth=[],
        description="Exchange a username and password for an access and a refresh token "
        "(401 if wrong, the same answer for an unknown user, a wrong password and an "
        "inactive user).",
    )
    @action(
        detail=False,
        methods=["post"],
        throttle_classes=[ClientIpThrottle],
        throttle_scope="login",
        **NO_TOKEN,
    )
    def login(self, request: Request) -> Response:
        return self._tokens(LoginSerializer, request)

    @extend_schema(
        request=RefreshSerializer,
        responses={200: AccessTokenSerializer},
        auth=[],
        description="Exchange a refresh token for a new access token (401 if the token is "
        "invalid, expired or logged out, or if its user changed their password, was "
        "deactivated or deleted since).",
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="token/refresh",
        url_name="token-refresh",
        **NO_TOKEN,
    )
    def token_refresh(self, request: Request) -> Response:
        return self._tokens(RefreshSerializer, request)

    @extend_schema(
        request=LogoutSerializer,
        responses={204: OpenApiResponse(description="The refresh token is ended.")},
        auth=[],
        description="End a refresh token: /users/token/refresh refuses it from then on. No "
        "access token needed. Ending a token already ended is 204 again; anything that is "
        "not a valid refresh token (an access token, an expired or forged one) is 401. "
        "Access tokens already issued last until they expire.",
    )
    @action(detail=False, methods=["post"], **NO_TOKEN)
    def logout(self, request: Request) -> Response:
        serializer = LogoutSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            user_logout(refresh=serializer.validated_data["refresh"])
        except TokenError as exc:
            raise InvalidToken(exc.args[0]) from exc
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "search",
                {"type": "string", "minLength": 1, "maxLength": 150, "pattern": "^[^\\u0000]+$"},
                required=True,
                description="The start of a username, in any case.",
            )
        ],
        responses={200: UserSerializer(many=True)},
        description="Active users whose username starts with `search`, in any case, by "
        "username (case-insensitive); `next` walks on. `search` missing or empty: 400.",
    )
    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(None)
        return self.get_paginated_response(UserSerializer(page, many=True).data)

    def get_throttles(self) -> list:  # type: ignore[override]
        if self.action == "list":
            # Per user: the people search could otherwise list every username.
            self.throttle_scope = "user_search"
            return [ScopedRateThrottle()]
        return super().get_throttles()

    @extend_schema(responses=UserSerializer)
    @action(detail=False, methods=["get"])
    def me(self, request: Request) -> Response:
        return Response(UserSerializer(request.user).data)

    @extend_schema(
        request=PasswordChangeSerializer,
        responses={204: OpenApiResponse(description="Changed; every older token is refused.")},
        description="Change the caller's password (400 if the old one is wrong or Django's "
        "password validators reject the new one). Every token issued before is refused from "
        "then on, and every open socket of the user is closed with 4401; log in again.",
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="me/password",
        url_name="me-password",
        throttle_classes=[ScopedRateThrottle],
        throttle_scope="password",
    )
    def password(self, request: Request) -> Response:
        serializer = PasswordChangeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user_password_change(user=request.user, **serializer.validated_data)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _tokens(self, serializer_class: type[Serializer], request: Request) -> Response:
        """simplejwt's TokenViewBase.post: a TokenError is an invalid token (401)."""
        serializer = serializer_class(data=request.data, context=self.get_serializer_context())
        try:
            serializer.is_valid(raise_exception=True)
        except TokenError as exc:
            raise InvalidToken(exc.args[0]) from exc
        return Response(serializer.validated_data, status=status.HTTP_200_OK)
