"""Turn (image, answer) pairs into model inputs whose labels cover exactly the answer.

Chat formatting goes through the model's own processor and chat template (never hand-typed special
tokens). For a training pair the full conversation is rendered, and the prompt part (system, image
tokens, question, the assistant header) plus padding and anything the template appends after the
answer's end-of-turn token is masked with -100, so only the answer and its end-of-turn token are learned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from PIL import Image

from describe.prompt import DEFAULT_QUESTION, DEFAULT_SYSTEM, build_messages

IGNORE = -100


def render(processor, question: str = DEFAULT_QUESTION, system: str | None = DEFAULT_SYSTEM,
           answer: str | None = None) -> str:
    """The chat-template text of one conversation; with no answer it ends at the assistant header."""
    return processor.apply_chat_template(build_messages(question, system, answer), tokenize=False,
                                         add_generation_prompt=answer is None)


@dataclass
class TrainCollator:
    """Batches (image, answer) examples for causal-LM training with answer-only labels.

    Each example is a dict with `image` (a PIL image) and `answer` (the target description).
    """

    processor: object
    question: str = DEFAULT_QUESTION
    system: str | None = DEFAULT_SYSTEM
    max_length: int | None = None

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        tok = self.processor.tokenizer
        tok.padding_side = "right"
        images = [[ex["image"]] for ex in examples]
        prompts = [render(self.processor, self.question, self.system) for _ in examples]
        answers = [ex["answer"].strip() for ex in examples]
        full = [p + a for p, a in zip(prompts, answers)]
        ends = [render(self.processor, self.question, self.system, a) for a in answers]
        for f, e in zip(full, ends):
            if not e.startswith(f):
                raise ValueError("chat template does not render the answer right after the assistant header")
        batch = self.processor(text=ends, images=images, padding=True, return_tensors="pt")
        prompt_ids = self.processor(text=prompts, images=images, padding=True, return_tensors="pt")
        answer_ids = self.processor(text=full, images=images, padding=True, return_tensors="pt")
        labels = torch.full_like(batch["input_ids"], IGNORE)
        for i in range(len(examples)):
            start = int(prompt_ids["attention_mask"][i].sum())
            stop = int(answer_ids["attention_mask"][i].sum()) + 1  # + the end-of-turn token
            if not torch.equal(batch["input_ids"][i, :start], prompt_ids["input_ids"][i, :start]):
                raise ValueError("the prompt tokenises differently inside the full conversation")
            labels[i, start:stop] = batch["input_ids"][i, start:stop]
        labels[batch["attention_mask"] == 0] = IGNORE
        batch["labels"] = labels
        return dict(batch)


def generation_inputs(processor, images: Sequence[Image.Image], question: str = DEFAULT_QUESTION,
                      system: str | None = DEFAULT_SYSTEM) -> dict[str, torch.Tensor]:
    """Left-padded prompts for batched generation."""
    processor.tokenizer.padding_side = "left"
    prompts = [render(processor, question, system) for _ in images]
    return dict(processor(text=prompts, images=[[im] for im in images], padding=True, return_tensors="pt"))
