"""Task generators (REC, ROC, REG, MIA, negatives) and the multi-turn conversation builder.

What each task is (its generator, whether it boxes its regions, its evaluation) is registered once in
:data:`medground.tasks.TASKS`. Phrasings live in ``phrases.json`` (package data); grounding strings come
only from the dialect.
"""

from medground.data.generators.base import ImageContext, TaskConfig, TaskState, Turn, load_phrases
from medground.data.generators.conversation import get_task, make_conversation, plan_tasks
from medground.data.generators.mia import mia_turn
from medground.data.generators.rec import negative_turn, rec_turn
from medground.data.generators.reg import reg_turn
from medground.data.generators.roc import roc_turn

__all__ = [
    "ImageContext",
    "TaskConfig",
    "TaskState",
    "Turn",
    "get_task",
    "load_phrases",
    "make_conversation",
    "mia_turn",
    "negative_turn",
    "plan_tasks",
    "rec_turn",
    "reg_turn",
    "roc_turn",
]
