"""Which tool a line asks for, by meaning: for models too small to decide that themselves.

The bundled 0.5B model, shown the tools, calls one for almost every line ("how are you?"
gets the time) or none at all once a persona speaks. So for it the choice is made here: the
line's embedding against a few example requests of each tool and of lines that need none
(the nearest example decides, if it is close enough and clearly closer than any line that
needs no tool). The model then only writes the arguments of the chosen tool, which are
validated against its schema (keys it does not take are left out).
"""

from collections.abc import Sequence

import numpy as np

from services.memory.embedder import Embedder
from services.policy.tools.declared import Tool

NO_TOOL_EXAMPLES = (
    "how are you today?",
    "what's your favourite game?",
    "which character do you like best?",
    "do you like summer or winter more?",
    "tell me something about you",
    "what do you usually do on weekends?",
    "tell me a joke",
    "I love your stream!",
    "hello everyone",
    "good night chat",
    "that was so funny",
    "what are you up to?",
    "thanks for the raid",
    "can you sing a song?",
    "who made you?",
    "my dog is called Pepper",
    "I just got home from work",
    "what's your name?",
    "lol",
)


class ToolGate:
    def __init__(
        self,
        embedder: Embedder,
        tools: Sequence[Tool],
        min_score: float = 0.45,
        margin: float = 0.1,
    ) -> None:
        self.embedder = embedder
        self.min_score = min_score
        self.margin = margin
        self.labels: list[str | None] = []
        texts: list[str] = []
        for tool in tools:
            texts += tool.examples
            self.labels += [tool.name] * len(tool.examples)
        texts += NO_TOOL_EXAMPLES
        self.labels += [None] * len(NO_TOOL_EXAMPLES)
        self.vectors = embedder.embed(texts) if texts else np.zeros((0, embedder.dimensions))

    def pick(self, text: str, allowed: Sequence[str]) -> str | None:
        """The tool the line asks for, among allowed; None if it needs none."""
        if not text.strip() or not len(self.vectors):
            return None
        scores = self.vectors @ self.embedder.embed_one(text)  # recall's, if it just ran
        best_none = max(
            (float(s) for s, label in zip(scores, self.labels, strict=True) if label is None),
            default=-1.0,
        )
        best: tuple[float, str] | None = None
        for score, label in zip(scores, self.labels, strict=True):
            if label is not None and label in allowed and (best is None or score > best[0]):
                best = (float(score), label)
        if best is None or best[0] < self.min_score or best[0] < best_none + self.margin:
            return None
        return best[1]
