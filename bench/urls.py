"""Bench-only URLs: everything of signaldash.urls plus POST /bench/nodb, a DRF view that does no database
work (parses the JSON body and answers 201), the ceiling for one event per request on the same server."""

from django.contrib.auth.decorators import login_not_required
from django.urls import path
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from signaldash.urls import urlpatterns as app_urlpatterns


class NoDatabaseApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    def post(self, request):
        return Response({"status": "created", "fields": len(request.data)}, status=201)


urlpatterns = [path("bench/nodb", login_not_required(NoDatabaseApi.as_view())), *app_urlpatterns]
