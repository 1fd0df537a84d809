from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from learn import services
from learn.models import ApiKey, Run


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    # a short id and seconds as "12.3 s": the full UUID wrapped over five lines of the list
    list_display = ("short_id", "playground", "status", "device", "worker", "created_at", "took")
    list_display_links = ("short_id",)
    list_filter = ("playground", "status", "device")
    search_fields = ("id",)
    readonly_fields = (
        "id", "playground", "params", "status", "result", "error", "device", "worker",
        "versions", "created_at", "started_at", "finished_at",
    )  # fmt: skip
    actions = ("cancel", "run_again")
    date_hierarchy = "created_at"

    @admin.display(description="run", ordering="id")
    def short_id(self, run: Run) -> str:
        """The id's first 8 characters, as run pages show it (search matches a prefix)."""
        return str(run.id)[:8]

    @admin.display(description="seconds")
    def took(self, run: Run) -> str:
        return f"{run.seconds:.1f} s" if run.seconds is not None else "–"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # runs start from playgrounds, the API, or "run again"

    def get_search_results(self, request, queryset, search_term):
        # ids are UUIDs: match a prefix of the text form, as shown in the list
        if search_term:
            return queryset.filter(id__startswith=search_term.strip()), False
        return super().get_search_results(request, queryset, search_term)

    @admin.action(description="Cancel selected runs (queued or running)")
    def cancel(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        cancelled = sum(services.cancel_run(run) for run in queryset)
        self.message_user(request, f"Cancelled {cancelled} run(s).", messages.SUCCESS)

    @admin.action(description="Run selected runs again (same parameters)")
    def run_again(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        try:
            new = [services.rerun(run) for run in queryset]
        except services.QueueUnavailable:
            self.message_user(request, "The job queue is not reachable.", messages.ERROR)
            return
        self.message_user(request, f"Queued {len(new)} new run(s).", messages.SUCCESS)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys for /v1 and the JSON API: the plaintext is shown once, when a key is added."""

    list_display = ("name", "prefix", "active", "requests_per_minute", "last_used_at", "user")
    list_filter = ("active",)
    search_fields = ("name", "prefix")
    readonly_fields = ("prefix", "created_at", "last_used_at")
    actions = ("deactivate",)

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        if obj is None:  # adding: the key itself is generated on save
            return ["name", "user", "requests_per_minute"]
        return ["name", "prefix", "user", "requests_per_minute", "active", "created_at",
                "last_used_at"]  # fmt: skip

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> tuple:
        return () if obj is None else self.readonly_fields

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        key, plaintext = services.create_api_key(
            obj.name, user=obj.user, requests_per_minute=obj.requests_per_minute
        )
        obj.pk, obj.prefix, obj.key_hash, obj.created_at = (
            key.pk, key.prefix, key.key_hash, key.created_at
        )  # fmt: skip
        obj._state.adding, obj._state.db = False, key._state.db
        self.message_user(
            request,
            f"The key for “{key.name}” is {plaintext} — copy it now: it is not stored and "
            "will not be shown again. Use it as 'Authorization: Bearer <key>'.",
            messages.SUCCESS,
        )

    @admin.action(description="Deactivate selected keys (they stop working at once)")
    def deactivate(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        count = services.deactivate_api_keys([key.pk for key in queryset])
        self.message_user(request, f"Deactivated {count} key(s).", messages.SUCCESS)
