"""Every write to the database goes through a function of this package (Zulip's
``do_*`` actions, in spirit): views, the API, the admin and the workers' handlers call
these; nothing else writes.

- ``runs``: a run's life (create, start, finish, fail, cancel, lost) and API keys;
- ``stores``: what handlers keep for a run (vectors, tokenizers, collections, the cache);
- ``learners``: answers to the chapters' checks, and a session adopted by an account.
"""

from learn.services.learners import adopt_session, record_check_answer
from learn.services.runs import (
    LOST_AFTER,
    RUN_TASK,
    QueueUnavailable,
    TooManyActive,
    cancel_run,
    create_api_key,
    create_run,
    deactivate_api_keys,
    fail_lost_runs,
    fail_run,
    fail_runs_of_dead_worker,
    finish_run,
    load_params,
    rerun,
    start_run,
)
from learn.services.stores import (
    ChunkRow,
    DocumentRows,
    PgvectorSearch,
    cache_answer,
    count_cache_hit,
    ensure_course_collection,
    pgvector_search,
    purge_expired_cache,
    save_tokenizer,
    store_collection,
    store_embeddings,
    store_vocabulary,
    vector_literal,
)

__all__ = [
    "LOST_AFTER",
    "RUN_TASK",
    "ChunkRow",
    "DocumentRows",
    "PgvectorSearch",
    "QueueUnavailable",
    "TooManyActive",
    "adopt_session",
    "cache_answer",
    "cancel_run",
    "count_cache_hit",
    "create_api_key",
    "create_run",
    "deactivate_api_keys",
    "ensure_course_collection",
    "fail_lost_runs",
    "fail_run",
    "fail_runs_of_dead_worker",
    "finish_run",
    "load_params",
    "pgvector_search",
    "purge_expired_cache",
    "record_check_answer",
    "rerun",
    "save_tokenizer",
    "start_run",
    "store_collection",
    "store_embeddings",
    "store_vocabulary",
    "vector_literal",
]
