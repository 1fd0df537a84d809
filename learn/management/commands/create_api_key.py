"""``manage.py create_api_key NAME [--rpm N] [--user USERNAME]``: a key for scripts and ops.

Prints the plaintext key on stdout (only its SHA-256 is stored, so this is the one
chance to copy it); the rest goes to stderr, so ``KEY=$(manage.py create_api_key ci)`` works.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from learn import services


class Command(BaseCommand):
    help = "Create an API key for /v1 and the JSON API; prints the key once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="who or what uses the key")
        parser.add_argument("--rpm", type=int, default=60, help="requests per minute (60)")
        parser.add_argument("--user", help="the username it belongs to (optional)")

    def handle(self, *args: Any, name: str, rpm: int, user: str | None, **options: Any) -> None:
        if not 1 <= rpm <= 100_000:
            raise CommandError(f"--rpm must be between 1 and 100000, not {rpm}.")
        if len(name) > 100:
            raise CommandError("The name is longer than 100 characters; shorten it.")
        owner = None
        if user:
            owner = get_user_model().objects.filter(username=user).first()
            if owner is None:
                raise CommandError(f"No user named '{user}'; create it first or drop --user.")
        key, plaintext = services.create_api_key(name, user=owner, requests_per_minute=rpm)
        self.stderr.write(f"Created key '{key.name}' ({key.prefix}…), {rpm} requests/minute.")
        self.stdout.write(plaintext)
