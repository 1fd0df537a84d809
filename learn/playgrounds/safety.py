"""Chapter 6, safety: prompt injection through a retrieved document, the mitigations side
by side, and the PII redactor measured on a labelled sample."""

from __future__ import annotations

from typing import Any, Literal

from django.http import QueryDict
from django.utils.datastructures import MultiValueDict
from pydantic import Field, field_validator, model_validator

from learn.lab.injection import VARIANTS, documents
from learn.lab.pii import KINDS
from learn.playgrounds.base import Playground, PlaygroundParams, register
from learn.playgrounds.rag import MAX_QUESTION_TOKENS, question_tokens

OWN = "own"  # the learner pastes the poisoned passage
MAX_ATTACK_CHARS = 2_000  # one passage, not a document: about 500 SmolLM2 tokens
MAX_PII_CHARS = 20_000
Variant = Literal["plain", "delimited", "schema", "checked", "allowlist"]
Kind = Literal["email", "phone", "card", "iban"]
assert set(VARIANTS) == set(Variant.__args__)  # type: ignore[attr-defined]
assert set(KINDS) == set(Kind.__args__)  # type: ignore[attr-defined]


class InjectionParams(PlaygroundParams):
    doc: str = Field(
        default="wifi", description="a built-in poisoned collection, or 'own' to paste one"
    )
    attack: str | None = Field(
        default=None,
        max_length=MAX_ATTACK_CHARS,
        description="with doc='own': the passage carrying instructions (at most 2,000 characters)",
    )
    canary: str | None = Field(
        default=None,
        min_length=3,
        max_length=60,
        description="the phrase that shows the injection took (the built-in document's own "
        "when empty)",
    )
    question: str | None = Field(
        default=None, max_length=1_000, description="the question (the document's own when empty)"
    )
    variants: list[Variant] = Field(default=list(VARIANTS), min_length=1, max_length=len(VARIANTS))
    k: int = Field(default=3, ge=1, le=4, description="passages retrieved into the prompt")
    max_new_tokens: int = Field(default=64, ge=8, le=96)

    @classmethod
    def from_form(cls, form: QueryDict, files: MultiValueDict) -> dict[str, Any]:
        data = super().from_form(form, files)
        data["variants"] = form.getlist("variants")
        for name in ("attack", "canary", "question"):
            if not (data.get(name) or "").strip():
                data.pop(name, None)
        return data

    @field_validator("doc")
    @classmethod
    def known_doc(cls, value: str) -> str:
        if value != OWN and value not in documents():
            raise ValueError(f"doc must be one of {', '.join([*documents(), OWN])}")
        return value

    @field_validator("question")
    @classmethod
    def short_question(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        n = question_tokens(value.strip())
        if n > MAX_QUESTION_TOKENS:
            raise ValueError(
                f"the question is {n} tokens; ask in at most {MAX_QUESTION_TOKENS} "
                "(a sentence or two)"
            )
        return value.strip()

    @model_validator(mode="after")
    def consistent(self) -> InjectionParams:
        if len(set(self.variants)) != len(self.variants):
            raise ValueError("each variant once, please")
        self.variants = sorted(self.variants, key=VARIANTS.index)  # type: ignore[arg-type]
        if self.doc == OWN:
            if not (self.attack or "").strip():
                raise ValueError("paste the passage that carries your instructions (attack)")
            if not self.canary or not self.canary.strip():
                raise ValueError(
                    "give the canary: a phrase your instructions make the model say, so the "
                    "page can tell whether they took"
                )
        elif self.attack:
            raise ValueError("an attack passage goes with doc='own'; leave it empty otherwise")
        return self

    def poisoned(self) -> tuple[str, list[str], str, str]:
        """(question, the collection's passages, the attack passage, the canary)."""
        base = documents()["library" if self.doc == OWN else self.doc]
        attack = (self.attack or "").strip() or base.attack
        canary = (self.canary or "").strip() or base.canary
        return self.question or base.question, base.collection(attack), attack, canary


class PiiParams(PlaygroundParams):
    text: str | None = Field(
        default=None,
        max_length=MAX_PII_CHARS,
        description="your own text (at most 20,000 characters); empty: the labelled sample",
    )
    kinds: list[Kind] = Field(default=list(KINDS), min_length=1, max_length=4)

    @classmethod
    def from_form(cls, form: QueryDict, files: MultiValueDict) -> dict[str, Any]:
        data = super().from_form(form, files)
        data["kinds"] = form.getlist("kinds")
        if not (data.get("text") or "").strip():
            data.pop("text", None)
        return data

    @field_validator("text")
    @classmethod
    def not_blank(cls, value: str | None) -> str | None:
        return value if value and value.strip() else None

    @field_validator("kinds")
    @classmethod
    def each_once(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each kind once, please")
        return value


HANDLERS = "workers.handlers.safety"

register(
    Playground(
        slug="injection",
        title="Prompt injection",
        chapter="rag-agents",
        summary="A passage in the collection gives the model orders. SmolLM2 answers under "
        "the plain RAG prompt and under each mitigation: fenced context, a JSON schema, an "
        "output check against the sources, a tool allow-list. Did the injection take?",
        params=InjectionParams,
        handler=f"{HANDLERS}:injection",
        queue="gpu",
        time_limit=600,
        live=True,
    ),
    Playground(
        slug="pii-redact",
        title="PII redaction",
        chapter="rag-agents",
        summary="Emails, phone numbers, card numbers (Luhn) and IBANs (mod 97) found and "
        "redacted before indexing: what the redactor caught, missed and took by mistake on a "
        "labelled sample, per kind.",
        params=PiiParams,
        handler=f"{HANDLERS}:pii",
        time_limit=60,
    ),
)
