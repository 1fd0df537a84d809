"""What the site stores: runs of playgrounds, and the vectors some of them keep."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from pgvector.django import HnswIndex, VectorField

EMBEDDING_DIM = 384  # all-MiniLM-L6-v2


class Run(models.Model):
    """One job of one playground: its inputs, where it ran, and what it produced."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    playground = models.CharField(max_length=64, db_index=True)
    params = models.JSONField()
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    owner = models.CharField(
        max_length=80,
        blank=True,
        db_index=True,
        help_text="who started it: 'session:<key>', 'user:<id>' or 'key:<id>' (see learn.owners)",
    )
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    device = models.CharField(max_length=64, blank=True)
    worker = models.CharField(max_length=255, blank=True)
    versions = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.playground} {str(self.id)[:8]} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class TextEmbedding(models.Model):
    """A text the embed playground embedded, kept so its neighbours can be queried."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="embeddings")
    position = models.PositiveIntegerField()
    text = models.TextField()
    embedding = VectorField(dimensions=EMBEDDING_DIM)

    class Meta:
        ordering = ["run", "position"]
        constraints = [
            models.UniqueConstraint(fields=["run", "position"], name="unique_text_per_run")
        ]


class VocabWord(models.Model):
    """A whole word of MiniLM's WordPiece vocabulary and its embedding (the analogy space)."""

    word = models.CharField(max_length=64, unique=True)
    rank = models.PositiveIntegerField(help_text="position in the vocabulary file")
    embedding = VectorField(dimensions=EMBEDDING_DIM)

    class Meta:
        ordering = ["rank"]
        indexes = [
            HnswIndex(
                name="vocab_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            )
        ]

    def __str__(self) -> str:
        return self.word


class Corpus(models.Model):
    """Text a learner pasted or uploaded to train a tokenizer on (kept off Run.params)."""

    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="corpus")
    text = models.TextField()
    source = models.CharField(max_length=255, blank=True, help_text="file name, or 'pasted'")


class TrainedTokenizer(models.Model):
    """A byte-level BPE tokenizer trained in the BPE playground, reusable by the others."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=64)
    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="tokenizer")
    vocab_size = models.PositiveIntegerField()
    pretokenizer = models.CharField(max_length=32)
    special_tokens = models.JSONField(default=list)
    data = models.JSONField(help_text="BPETokenizer.to_dict(): merges, vocab, config")
    corpus_chars = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.vocab_size:,} tokens, {self.pretokenizer})"


class ApiKey(models.Model):
    """A key for the JSON and OpenAI-compatible APIs (``Authorization: Bearer fp-…``).

    Only a SHA-256 of the key is stored; staff see the key once, when they create it.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100, help_text="who or what uses it")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE
    )
    requests_per_minute = models.PositiveIntegerField(default=60)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class Collection(models.Model):
    """Documents to retrieve from: the course itself (built in) or a learner's own."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100)
    owner = models.CharField(max_length=80, blank=True, db_index=True)
    builtin = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-builtin", "-created_at"]

    def __str__(self) -> str:
        return self.name


class Document(models.Model):
    """One text of a collection (a lesson, an upload, a paste), kept whole for highlighting."""

    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="documents")
    title = models.CharField(max_length=255)
    source = models.CharField(max_length=255, blank=True, help_text="file name, lesson, 'pasted'")
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["collection", "id"]


class Chunk(models.Model):
    """A span of a document, cut by one chunker, with its MiniLM embedding."""

    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="chunks")
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    chunker = models.CharField(max_length=16)
    position = models.PositiveIntegerField(help_text="order within the document and chunker")
    start = models.PositiveIntegerField(help_text="character offset in the document")
    end = models.PositiveIntegerField()
    context_start = models.PositiveIntegerField(help_text="what the model is given: a window")
    context_end = models.PositiveIntegerField()
    section = models.CharField(max_length=100, blank=True, help_text="lesson section id")
    text = models.TextField()
    tokens = models.PositiveIntegerField()
    embedding = VectorField(dimensions=EMBEDDING_DIM)

    class Meta:
        ordering = ["document", "chunker", "position"]
        indexes = [
            models.Index(fields=["collection", "chunker"]),
            HnswIndex(
                name="chunk_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
        ]


class CacheEntry(models.Model):
    """A generated answer kept under its question's embedding: the semantic cache."""

    collection = models.ForeignKey(
        Collection, null=True, blank=True, on_delete=models.CASCADE, related_name="cache"
    )
    question = models.TextField()
    embedding = VectorField(dimensions=EMBEDDING_DIM)
    answer = models.TextField()
    generation_ms = models.FloatField()
    hits = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            HnswIndex(
                name="cache_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            )
        ]


class CheckAnswer(models.Model):
    """One answer a learner gave to a chapter's check (learn.checks), graded when given.

    A check answered from a run keeps that run: the grade compared the answer with its
    stored result. ``owner`` is an ``Owner.tag``, like ``Run.owner``.
    """

    owner = models.CharField(max_length=80, db_index=True)
    check_id = models.CharField(max_length=64, db_index=True)
    run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="check_answers"
    )
    answer = models.CharField(max_length=200)
    correct = models.BooleanField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.check_id} by {self.owner}: {'right' if self.correct else 'wrong'}"
