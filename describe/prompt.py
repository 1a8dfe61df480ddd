"""The describer's question and the contract its answers must follow.

The default question is the one RAISE-TD's GPT-4.1 descriptions answered (verbatim, typos included, so
a model fine-tuned on those descriptions sees the prompt they were written for). The contract: the answer
starts with Yes, No or Somewhat, and explains in at most about 30 words what looks unreal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DEFAULT_SYSTEM = "You are a helpful assistant that describes images in detail."
DEFAULT_QUESTION = (
    "Is there anything unrealistic in this image? yes or no or somewhat,if yes or somewhat explain in maximum "
    "30 words, please ensure to explain what looks unreal like if face is distorted , or transition between "
    "objects is not smooth, or any other unrealistic thing you see in the image."
)
VERDICTS = ("yes", "no", "somewhat")
MAX_WORDS = 35  # "maximum 30 words" in the prompt; GPT-4.1 itself goes to ~33
_VERDICT = re.compile(r"^\s*(yes|no|somewhat)\b[\s,.:;!\-–—]*", re.IGNORECASE)


def parse_verdict(text: str) -> tuple[str, str]:
    """`(verdict, rest)`: verdict is yes/no/somewhat, or "" when the text does not start with one."""
    if not text or not text.strip():
        raise ValueError("empty description: nothing to parse")
    m = _VERDICT.match(text)
    if not m:
        return "", text.strip()
    return m.group(1).lower(), text[m.end():].strip()


@dataclass
class Answer:
    """A parsed answer; `ok` is False (with `problems`) when it breaks the contract."""

    text: str
    verdict: str
    explanation: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def parse_answer(text: str, max_words: int = MAX_WORDS) -> Answer:
    """Split an answer into verdict and explanation and check the contract."""
    text = (text or "").strip()
    if not text:
        return Answer(text, "", "", ["empty answer"])
    verdict, explanation = parse_verdict(text)
    problems = []
    if not verdict:
        problems.append("does not start with Yes, No or Somewhat")
    words = len(explanation.split())
    if words > max_words:
        problems.append(f"explanation has {words} words (at most {max_words})")
    if verdict in ("yes", "somewhat") and words == 0:
        problems.append(f"'{verdict}' without an explanation")
    return Answer(text, verdict, explanation, problems)


def build_messages(question: str = DEFAULT_QUESTION, system: str | None = DEFAULT_SYSTEM,
                   answer: str | None = None) -> list[dict]:
    """Chat messages (one image, then the question; optionally the assistant's answer) in the
    structured-content form that every transformers processor's chat template understands."""
    messages = []
    if system:
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    messages.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]})
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages
