from django.urls import path

from learn import views

urlpatterns = [
    path("", views.home, name="home"),
    path("chapters/<slug:slug>/", views.chapter, name="chapter"),
    path("runs/<uuid:run_id>/", views.run_page, name="run"),
    path("runs/<uuid:run_id>/stream", views.run_stream, name="run-stream"),
    path("runs/<uuid:run_id>/neighbours", views.neighbours, name="run-neighbours"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("benchmarks/", views.benchmarks, name="benchmarks"),
    path("healthz", views.healthz, name="healthz"),
]
