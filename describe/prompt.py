"""The describer's question (the answer contract it asks for is `realness.answers`).

The default question is the one RAISE-TD's GPT-4.1 descriptions answered (verbatim, typos included, so
a model fine-tuned on those descriptions sees the prompt they were written for). The contract: the answer
starts with Yes, No or Somewhat, and explains in at most about 30 words what looks unreal.
"""

from __future__ import annotations

DEFAULT_SYSTEM = "You are a helpful assistant that describes images in detail."
DEFAULT_QUESTION = (
    "Is there anything unrealistic in this image? yes or no or somewhat,if yes or somewhat explain in maximum "
    "30 words, please ensure to explain what looks unreal like if face is distorted , or transition between "
    "objects is not smooth, or any other unrealistic thing you see in the image."
)
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
