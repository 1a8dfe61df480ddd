"""Aspect steering (`describe.steering`) as a vLLM logits processor: the same token-id rule as the transformers
engine's, applied per request. A request steers when its `SamplingParams.extra_args` carry
`{STEERING_KEY: {"ids": [[[nudged id, ...], [counted id, ...]], ...], "bias": b}}` (one pair per listed aspect, from
`describe.steering.steering_ids`); the engine registers the class with `vllm.LLM(logits_processors=[...])` only
when its region prompt steers. Imports vLLM, so only the vLLM engine imports this module."""

from __future__ import annotations

from functools import partial

from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from describe.steering import STEERING_KEY, steer_row


class AspectSteeringProcessor(AdapterLogitsProcessor):
    """Per request: `steer_row` over the tokens generated so far."""

    def is_argmax_invariant(self) -> bool:
        return False  # the bias is meant to change the greedy choice

    def new_req_logits_processor(self, params):
        spec = (params.extra_args or {}).get(STEERING_KEY)
        if not spec or not spec.get("bias") or not spec.get("ids"):
            return None
        # vLLM calls it with (output_ids, logits): the partial's signature has four parameters, not the three
        # that would ask for the prompt's ids too.
        return partial(steer_row, wanted=spec["ids"], bias=float(spec["bias"]))
