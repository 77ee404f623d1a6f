from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework_simplejwt.exceptions import AuthenticationFailed
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from accounts.models import User
from accounts.serializers import RegisterSerializer, TokenPairSerializer, UserSerializer
from accounts.services import user_register
from accounts.throttles import ClientIpThrottle


class UserViewSet(viewsets.GenericViewSet):
    """Registration and the caller's own account."""

    serializer_class = UserSerializer
    throttle_scope: str | None = None  # Set per action below.

    @extend_schema(request=RegisterSerializer, responses={201: UserSerializer}, auth=[])
    @action(
        detail=False,
        methods=["post"],
        permission_classes=[AllowAny],
        authentication_classes=[],
        throttle_classes=[ClientIpThrottle],
        throttle_scope="register",
    )
    def register(self, request: Request) -> Response:
        serializer = RegisterSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = user_register(**serializer.validated_data)
        return Response(UserSerializer(user).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses=UserSerializer)
    @action(detail=False, methods=["get"])
    def me(self, request: Request) -> Response:
        return Response(UserSerializer(request.user).data)


class LoginView(TokenObtainPairView):
    """Exchange a username and password for an access and a refresh token (401 if wrong)."""

    throttle_classes = [ClientIpThrottle]
    throttle_scope = "login"

    @extend_schema(responses={200: TokenPairSerializer}, auth=[])
    def post(self, request: Request, *args, **kwargs) -> Response:
        return super().post(request, *args, **kwargs)


class RefreshView(TokenRefreshView):
    """Exchange a refresh token for a new access token (401 if the token is invalid, expired,
    or its user is inactive or deleted)."""

    def post(self, request: Request, *args, **kwargs) -> Response:
        try:
            return super().post(request, *args, **kwargs)
        except User.DoesNotExist as exc:
            # simplejwt looks the token's user up with `.get()` and lets this escape: the
            # refresh token of a deleted user was a 500.
            raise AuthenticationFailed(
                "No active account found for the given token.", "no_active_account"
            ) from exc
