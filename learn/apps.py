from django.apps import AppConfig


class LearnConfig(AppConfig):
    name = "learn"
    verbose_name = "Lessons and playgrounds"

    def ready(self) -> None:
        from learn.services import runs  # noqa: F401  (connects the run signal receivers)
