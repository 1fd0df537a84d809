"""What the site stores: runs of playgrounds, and the vectors some of them keep."""

from __future__ import annotations

import uuid

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
