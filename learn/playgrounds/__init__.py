"""Every playground, one registry: ``PLAYGROUNDS[slug]`` → schema, handler path, queue.

Adding a playground: a params schema and a ``Playground`` entry in its chapter's module
here, a handler in the mirrored ``workers/handlers/<chapter>.py``, a template
``templates/playgrounds/<slug>.html`` (``form`` and ``result`` partials), tests.
"""

from learn.playgrounds import (
    agents,
    embeddings,
    finetune,
    inference,
    prompting,
    rag,
    safety,
    serving,
    structured,
    tokens,
    training,
    transformers,
    vectors,
)
from learn.playgrounds.base import (
    PLAYGROUNDS,
    FormProblem,
    Playground,
    PlaygroundError,
    PlaygroundParams,
    for_chapter,
)

CHAPTER_MODULES = (
    embeddings,
    vectors,
    tokens,
    transformers,
    training,
    finetune,
    inference,
    rag,
    serving,
    structured,
    prompting,
    agents,
    safety,
)

__all__ = [
    "CHAPTER_MODULES",
    "PLAYGROUNDS",
    "FormProblem",
    "Playground",
    "PlaygroundError",
    "PlaygroundParams",
    "for_chapter",
]
