"""The task registry: ``data.task`` → the :class:`~pipelines.tasks.base.Task` that owns it.

The built-in tasks (one module each: :mod:`.lm`, :mod:`.tagging`, :mod:`.classification`,
:mod:`.seq2seq`) register themselves when this package is imported. A new task is a
:class:`~pipelines.tasks.base.Task` subclass registered with :func:`register`; nothing else in
rnnflow needs an edit::

    from pipelines import tasks

    class LengthTags(tasks.TaggingTask):
        name = "length_tags"
        ...

    tasks.register(LengthTags())
"""

from __future__ import annotations

from pipelines.tasks.base import LABEL, ROLES, TAGS, TARGET, TEXT, Encoded, Task, TaskData

_TASKS: dict[str, Task] = {}


def register(task: Task, *, replace: bool = False) -> Task:
    """Adds ``task`` under ``task.name``; another task of that name is an error unless ``replace``."""
    if not isinstance(task, Task):
        raise TypeError(f"register takes a Task instance, got {task!r}")
    for attr in ("name", "model_type", "metric", "greater_is_better", "reads", "model_file"):
        if not hasattr(task, attr):
            raise TypeError(f"{type(task).__name__} must define {attr!r}")
    unknown = sorted(set(task.reads) - set(ROLES))
    if unknown:
        raise ValueError(f"task {task.name!r} reads unknown roles {unknown}; roles: {list(ROLES)}")
    if task.name in _TASKS and not replace and _TASKS[task.name] is not task:
        raise ValueError(f"a task named {task.name!r} is registered already ({_TASKS[task.name]!r})")
    _TASKS[task.name] = task
    return task


def unregister(name: str) -> None:
    """Removes a task (tests that register a toy task clean up with this)."""
    _TASKS.pop(name, None)


def get(name: str) -> Task:
    try:
        return _TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; registered tasks: {', '.join(names())}") from None


def names() -> tuple[str, ...]:
    return tuple(_TASKS)


def all_tasks() -> tuple[Task, ...]:
    return tuple(_TASKS.values())


def for_model(model) -> Task:
    """The task whose export ``model`` is (``rnnflow evaluate``)."""
    for task in _TASKS.values():
        if task.owns(model):
            return task
    raise ValueError(f"no registered task exports a {type(model).__name__}")


def default_for(provides: frozenset[str] | set[str]) -> Task | None:
    """The task a format's items feed when ``data.task`` is not set: of the tasks that can read
    them, the one that uses the most of what they provide (a tagged corpus → tagging, not a
    language model over its words); the first registered among equals."""
    fitting = [t for t in _TASKS.values() if set(t.reads) <= set(provides)]
    return max(fitting, key=lambda t: len(t.reads), default=None)


# the built-in tasks register themselves, in this order
from pipelines.tasks import lm  # noqa: E402,I001
from pipelines.tasks import tagging  # noqa: E402
from pipelines.tasks import classification  # noqa: E402
from pipelines.tasks import seq2seq  # noqa: E402
from pipelines.tasks.classification import ClassificationTask  # noqa: E402
from pipelines.tasks.lm import LanguageModelTask  # noqa: E402
from pipelines.tasks.seq2seq import Seq2SeqTask  # noqa: E402
from pipelines.tasks.tagging import TaggingTask  # noqa: E402

__all__ = [
    "Task", "TaskData", "Encoded", "TEXT", "TAGS", "LABEL", "TARGET", "ROLES",
    "register", "unregister", "get", "names", "all_tasks", "for_model", "default_for",
    "LanguageModelTask", "TaggingTask", "ClassificationTask", "Seq2SeqTask",
    "lm", "tagging", "classification", "seq2seq",
]
