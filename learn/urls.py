from django.urls import path

from learn import pages, views

urlpatterns = [
    path("", views.home, name="home"),
    path("chapters/<slug:slug>/", views.chapter, name="chapter"),
    path("runs/<uuid:run_id>/", views.run_page, name="run"),
    path("runs/<uuid:run_id>/stream", views.run_stream, name="run-stream"),
    path("runs/<uuid:run_id>/neighbours", views.neighbours, name="run-neighbours"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("benchmarks/", views.benchmarks, name="benchmarks"),
    path("healthz", views.healthz, name="healthz"),
    path("me/runs/", pages.my_runs, name="my-runs"),
    path("checks/<slug:check_id>/answer", pages.answer_check, name="check-answer"),
    path("accounts/signup/", pages.signup, name="signup"),
    path("accounts/login/", pages.login_page, name="login"),
    path("accounts/logout/", pages.logout_page, name="logout"),
]
