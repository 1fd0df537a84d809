"""Chapter 6, agents: SmolLM2 calling tools (calculator, unit conversion, today's date,
course search) in a ReAct loop, one task at a time or over the built-in task set."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from learn.playgrounds.base import Playground, PlaygroundParams, register

MAX_TASK_CHARS = 300  # a question, not a document: the few-shot prompt must still fit
EVAL_MAX_TASKS = 16  # the evaluation's subset: 4 configurations each, on a shared CPU


def _task_choices() -> list[tuple[str, str]]:
    from learn.lab.agent import task_set  # JSON and the standard library: no torch

    return [(item["id"], item["task"]) for item in task_set()["tasks"]]


class AgentParams(PlaygroundParams):
    # the form lists the built-in tasks from here (``pg.params.task_choices``); a template
    # must not call the class itself
    do_not_call_in_templates: ClassVar[bool] = True
    task_choices: ClassVar[list[tuple[str, str]]] = _task_choices()

    mode: Literal["run", "evaluate"] = Field(
        default="run", description="'run': one task, step by step; 'evaluate': the task set"
    )
    task: str = Field(
        default="", max_length=2_000, description="your task (or pick one with task_id)"
    )
    task_id: str = Field(
        default="", max_length=40, description="a task of the built-in set, when task is empty"
    )
    tools: bool = Field(default=True, description="give the model its tools")
    constrained: bool = Field(
        default=True, description="decode each tool call under the call's JSON schema"
    )
    max_steps: int = Field(default=4, ge=1, le=8, description="model turns before giving up")
    memory_budget: int = Field(
        default=1_024,
        ge=384,
        le=1_536,
        description="SmolLM2 tokens of prompt; older steps are summarised past it",
    )
    eval_tasks: int = Field(
        default=8,
        ge=1,
        le=EVAL_MAX_TASKS,
        description="evaluate: the first K tasks, each with and without tools, constrained and not",
    )

    @field_validator("task")
    @classmethod
    def short_task(cls, value: str) -> str:
        value = " ".join(value.split())
        if len(value) > MAX_TASK_CHARS:
            raise ValueError(
                f"the task is {len(value)} characters; write it in at most {MAX_TASK_CHARS}"
            )
        return value

    @field_validator("task_id")
    @classmethod
    def known_task(cls, value: str) -> str:
        value = value.strip()
        if value and value not in dict(cls.task_choices):
            raise ValueError(f"there is no built-in task '{value}'; leave it empty for your own")
        return value

    @model_validator(mode="after")
    def something_to_do(self) -> AgentParams:
        if self.mode == "run" and not self.task and not self.task_id:
            raise ValueError("the task is empty: write one, or pick one from the built-in set")
        return self


register(
    Playground(
        slug="agent",
        title="Agent with tools",
        chapter="rag-agents",
        summary="SmolLM2 calls a calculator, unit conversion, today's date and course search "
        "in a loop, one JSON call per step; or the task set scored with tools and without, "
        "constrained calls and free ones.",
        params=AgentParams,
        handler="workers.handlers.agents:agent",
        queue="gpu",
        time_limit=600,
        live=True,
    ),
)
