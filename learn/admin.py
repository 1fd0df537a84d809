from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from learn import services
from learn.models import Run


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ("id", "playground", "status", "device", "worker", "created_at", "seconds")
    list_filter = ("playground", "status", "device")
    search_fields = ("id",)
    readonly_fields = (
        "id", "playground", "params", "status", "result", "error", "device", "worker",
        "versions", "created_at", "started_at", "finished_at",
    )  # fmt: skip
    actions = ("cancel", "run_again")
    date_hierarchy = "created_at"

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
