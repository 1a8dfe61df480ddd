"""Turn (image, answer) pairs into model inputs whose labels cover exactly the answer.

Chat formatting goes through the model's own processor and chat template (never hand-typed special
tokens). For a training pair the full conversation is rendered, and the prompt part (system, image
tokens, question, the assistant header) plus padding and anything the template appends after the
answer's end-of-turn token is masked with -100, so only the answer and its end-of-turn token are learned.
Works for templates that put a space or newline between the assistant header and the answer.

With a `RegionPrompt` (enabled), each image's stage-1 regions change its prompt and add its zoomed crops
(`describe.prompt`); an image with no regions gets the plain prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from describe.prompt import DEFAULT_QUESTION, DEFAULT_SYSTEM, RegionPrompt, build_messages, crop_regions, region_prompt

IGNORE = -100


def render(processor, question: str = DEFAULT_QUESTION, system: str | None = DEFAULT_SYSTEM,
           answer: str | None = None, crops: int = 0) -> str:
    """The chat-template text of one conversation; with no answer it ends at the assistant header."""
    return processor.apply_chat_template(build_messages(question, system, answer, crops), tokenize=False,
                                         add_generation_prompt=answer is None)


def prompt_parts(image: Image.Image, regions, question: str = DEFAULT_QUESTION,
                 regions_cfg: RegionPrompt | None = None) -> tuple[str, list[Image.Image]]:
    """`(question, images)` for one image: the question with its regions and the image followed by its crops,
    or the plain question and the image alone (no regions, or regions not enabled)."""
    if regions_cfg is None or not regions_cfg.enabled or regions is None:
        return question, [image]
    text, cropped = region_prompt(question, regions, image.size, regions_cfg)
    return text, [image, *crop_regions(image, cropped, regions_cfg.crop_size, regions_cfg.crop_margin)]


@dataclass
class TrainCollator:
    """Batches (image, answer) examples for causal-LM training with answer-only labels.

    Each example is a dict with `image` (a PIL image), `answer` (the target description) and, with `regions`
    enabled, `regions` (that image's stage-1 `Region`s, possibly none).
    """

    processor: object
    question: str = DEFAULT_QUESTION
    system: str | None = DEFAULT_SYSTEM
    max_length: int | None = None
    regions: RegionPrompt | None = None

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        self.processor.tokenizer.padding_side = "right"
        parts = [prompt_parts(ex["image"], ex.get("regions"), self.question, self.regions) for ex in examples]
        images = [imgs for _, imgs in parts]
        answers = [ex["answer"].strip() for ex in examples]
        full = [render(self.processor, q, self.system, a, len(imgs) - 1) for (q, imgs), a in zip(parts, answers)]
        cuts = [f.rfind(a) for f, a in zip(full, answers)]
        if any(c < 0 for c in cuts):
            raise ValueError("the chat template changed the answer text; cannot locate it for the labels")
        batch = self.processor(text=full, images=images, padding=True, return_tensors="pt")
        # Where the answer starts and ends is found on the text tokens alone (no second and third pass
        # over the images): the image placeholders all lie in the prompt, so in the processed batch
        # both positions are shifted by the same number of extra image tokens.
        tok = self.processor.tokenizer
        prompts = {}
        labels = torch.full_like(batch["input_ids"], IGNORE)
        for i, (f, c, a) in enumerate(zip(full, cuts, answers)):
            key = (parts[i][0], len(images[i]))
            if key not in prompts:
                prompts[key] = tok(render(self.processor, key[0], self.system, crops=key[1] - 1))["input_ids"]
            prompt_ids = prompts[key]
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


def generation_prompts(processor, images: Sequence[Image.Image], question: str = DEFAULT_QUESTION,
                       system: str | None = DEFAULT_SYSTEM, prefixes: Sequence[str] | None = None,
                       regions: Sequence | None = None, regions_cfg: RegionPrompt | None = None
                       ) -> tuple[list[str], list[list[Image.Image]]]:
    """`(prompt texts, images per prompt)` for generation: each image's prompt (with its regions, `prompt_parts`)
    ending at the assistant header, followed by its answer prefix if given; the same inputs for every engine."""
    if prefixes is not None and len(prefixes) != len(images):
        raise ValueError(f"{len(prefixes)} answer prefixes for {len(images)} images")
    if regions is not None and len(regions) != len(images):
        raise ValueError(f"regions for {len(regions)} images but {len(images)} images")
    parts = [prompt_parts(im, regions[i] if regions is not None else None, question, regions_cfg)
             for i, im in enumerate(images)]
    rendered: dict[tuple[str, int], str] = {}
    prompts = []
    for i, (q, imgs) in enumerate(parts):
        key = (q, len(imgs))
        if key not in rendered:
            rendered[key] = render(processor, q, system, crops=len(imgs) - 1)
        prompts.append(rendered[key] + (prefixes[i] if prefixes is not None else ""))
    return prompts, [imgs for _, imgs in parts]


def generation_inputs(processor, images: Sequence[Image.Image], question: str = DEFAULT_QUESTION,
                      system: str | None = DEFAULT_SYSTEM, prefixes: Sequence[str] | None = None,
                      regions: Sequence | None = None, regions_cfg: RegionPrompt | None = None) -> dict[str, torch.Tensor]:
    """Left-padded prompts for batched generation; `prefixes` (one per image) are the start of each answer,
    written after the assistant header (a verdict guide's "Yes" / "Somewhat" / "No"), which the model continues;
    `regions` (one list per image) with an enabled `regions_cfg` add each image's regions and crops."""
    processor.tokenizer.padding_side = "left"
    prompts, images = generation_prompts(processor, images, question, system, prefixes, regions, regions_cfg)
    return dict(processor(text=prompts, images=images, padding=True, return_tensors="pt"))
