"""Turn (image, answer) pairs into model inputs whose labels cover exactly the answer.

Chat formatting goes through the model's own processor and chat template (never hand-typed special
tokens). For a training pair the full conversation is rendered, and the prompt part (system, image
tokens, question, the assistant header) plus padding and anything the template appends after the
answer's end-of-turn token is masked with -100, so only the answer and its end-of-turn token are learned.
Works for templates that put a space or newline between the assistant header and the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
        self.processor.tokenizer.padding_side = "right"
        images = [[ex["image"]] for ex in examples]
        answers = [ex["answer"].strip() for ex in examples]
        full = [render(self.processor, self.question, self.system, a) for a in answers]
        cuts = [f.rfind(a) for f, a in zip(full, answers)]
        if any(c < 0 for c in cuts):
            raise ValueError("the chat template changed the answer text; cannot locate it for the labels")
        batch = self.processor(text=full, images=images, padding=True, return_tensors="pt")
        # Where the answer starts and ends is found on the text tokens alone (no second and third pass
        # over the images): the image placeholders all lie in the prompt, so in the processed batch
        # both positions are shifted by the same number of extra image tokens.
        tok = self.processor.tokenizer
        prompt_ids = tok(render(self.processor, self.question, self.system))["input_ids"]
        labels = torch.full_like(batch["input_ids"], IGNORE)
        for i, (f, c, a) in enumerate(zip(full, cuts, answers)):
            plain = tok(f)["input_ids"]
            shift = int(batch["attention_mask"][i].sum()) - len(plain)
            # Labels start exactly where generation will start: after the tokens the generation
            # prompt shares with the full text (a template's "Assistant:" + " Yes" puts the space in
            # the answer, so the model learns to produce it).
            start = _common_prefix(plain, prompt_ids) + shift
            stop = _common_prefix(plain, tok(f[:c + len(a)])["input_ids"]) + shift + 1  # + end of turn
            labels[i, start:stop] = batch["input_ids"][i, start:stop]
        labels[batch["attention_mask"] == 0] = IGNORE
        batch["labels"] = labels
        return dict(batch)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    return next((k for k in range(n) if a[k] != b[k]), n)


def generation_inputs(processor, images: Sequence[Image.Image], question: str = DEFAULT_QUESTION,
                      system: str | None = DEFAULT_SYSTEM, prefixes: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Left-padded prompts for batched generation; `prefixes` (one per image) are the start of each answer,
    written after the assistant header (a verdict guide's "Yes" / "Somewhat" / "No"), which the model continues."""
    processor.tokenizer.padding_side = "left"
    prompt = render(processor, question, system)
    if prefixes is not None and len(prefixes) != len(images):
        raise ValueError(f"{len(prefixes)} answer prefixes for {len(images)} images")
    prompts = [prompt + p for p in prefixes] if prefixes is not None else [prompt] * len(images)
    return dict(processor(text=prompts, images=[[im] for im in images], padding=True, return_tensors="pt"))
