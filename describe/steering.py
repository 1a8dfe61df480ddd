"""Aspect steering: greedy decoding nudged towards the aspects stage 1 listed, until the answer discusses them.

A describer trained with the aspects line (`describe.prompt.RegionPrompt.aspects`) discusses only about half of
the aspects it is told to (eval/README.md, "Grounded descriptions, side by side"). Steering adds `bias` to the
logits of the words of each listed aspect (`realness.mentions.MENTIONS`: "lighting" raises " light",
" lighting", " shadows", ...) while the answer so far holds none of them, and takes the bias off once it does,
so an aspect is asked for, never repeated. A word is nudged when it is one token of the describer's tokenizer
with a leading space (" light", " Light"): the piece without one glues onto the word before it ("sky" + "light"
made "skylight" in a sample). It counts as said in either spelling, capitalised or not; words longer than one
token are neither nudged nor counted. The rule
reads token ids only (`steer_row`), so the transformers engine (`AspectSteering`) and the vLLM engine (its
per-request logits processor, `describe.engines.vllm_steering`) steer alike. With `bias` 0 (the default)
decoding is plain greedy decoding.

    from describe.steering import AspectSteering
    processor = AspectSteering(tokenizer, [("lighting",), ()], bias=2.0)
    model.generate(..., logits_processor=LogitsProcessorList([processor]))

Rows of a batch each have their own aspects (a row with none is left alone).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from realness.mentions import MENTIONS

STEERING_KEY = "aspect_steering"  # the vLLM engine's SamplingParams.extra_args entry (describe.engines.vllm_steering)


def aspect_token_ids(tokenizer, category: str, spaced_only: bool = False) -> list[int]:
    """Ids of the single-token spellings (" word", "word", " Word", "Word") of `category`'s words; with
    `spaced_only`, of the space-led ones (" word", " Word") alone."""
    ids: set[int] = set()
    for word in MENTIONS[category]:
        spellings = [f" {word}", f" {word.capitalize()}"] + ([] if spaced_only else [word, word.capitalize()])
        for spelling in spellings:
            tokens = tokenizer.encode(spelling, add_special_tokens=False)
            if len(tokens) == 1:
                ids.add(tokens[0])
    return sorted(ids)


def steers(prompt) -> bool:
    """Whether a region prompt (`describe.prompt.RegionPrompt`) asks for steering: regions, aspects, `steer` > 0."""
    return bool(prompt is not None and prompt.enabled and prompt.aspects and prompt.steer)


def steering_ids(tokenizer, aspects: Sequence[str] | None) -> list[list[list[int]]]:
    """Each listed aspect's `[nudged, counted]` word ids: the space-led single-token spellings, and all of them
    (`aspect_token_ids`); aspects with no space-led single-token word are left out."""
    pairs = [[aspect_token_ids(tokenizer, c, spaced_only=True), aspect_token_ids(tokenizer, c)] for c in aspects or ()]
    return [pair for pair in pairs if pair[0]]


def steer_row(output_ids: Sequence[int], logits: torch.Tensor, wanted: Sequence[Sequence[Sequence[int]]],
              bias: float) -> torch.Tensor:
    """`logits` (vocabulary,) with `bias` added to the nudged ids of every aspect in `wanted` (`[nudged, counted]`
    id lists each, `steering_ids`) none of whose counted ids is among the answer's tokens so far (`output_ids`);
    in place, and returned."""
    said = set(output_ids)
    for nudged, counted in wanted:
        if not said.intersection(counted):
            logits[nudged] += bias
    return logits


class AspectSteering:
    """A transformers logits processor: per row, `bias` on the listed aspects' words not yet said."""

    def __init__(self, tokenizer, aspects: Sequence[Sequence[str] | None], bias: float):
        if bias < 0:
            raise ValueError(f"steering bias must be >= 0, got {bias}")
        self.bias = float(bias)
        self.wanted = [steering_ids(tokenizer, a) for a in aspects]
        self.start: int | None = None  # the prompt's length, seen at the first step

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not self.bias:
            return scores
        if self.start is None:
            self.start = input_ids.shape[1]
        if input_ids.shape[0] != len(self.wanted):
            raise ValueError(f"{input_ids.shape[0]} rows but aspects for {len(self.wanted)}")
        scores = scores.clone()
        for row, wanted in enumerate(self.wanted):
            if wanted:
                steer_row(input_ids[row, self.start:].tolist(), scores[row], wanted, self.bias)
        return scores
