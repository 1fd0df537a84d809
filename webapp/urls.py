from django.contrib import admin
from django.urls import include, path

from learn import openai_api, views
from webapp.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("v1/", include(openai_api)),  # OpenAI-compatible, bearer keys only
    path("metrics", views.metrics_view, name="metrics"),  # staff or FP_METRICS_TOKEN
    path("", include("learn.urls")),
]
