"""Aspect steering (describe.steering): the bias lands on the listed aspects' words, only until they are said."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, LogitsProcessorList

from describe.small import resolve_describer
from describe.steering import AspectSteering, aspect_token_ids
from realness.mentions import MENTIONS, mentions


@pytest.fixture(scope="module")
def tokenizer():
    model_id, _ = resolve_describer("offline/small-describer", None)
    return AutoTokenizer.from_pretrained(model_id)


def test_token_ids_are_the_category_words(tokenizer):
    ids = aspect_token_ids(tokenizer, "lighting")
    words = {tokenizer.decode([i]).strip().lower() for i in ids}
    assert {"lighting", "shadows", "light"} <= words
    assert words <= set(MENTIONS["lighting"])
    assert not set(ids) & set(aspect_token_ids(tokenizer, "background"))
    spaced = aspect_token_ids(tokenizer, "lighting", spaced_only=True)
    assert spaced and set(spaced) < set(ids)
    assert all(tokenizer.decode([i]).startswith(" ") for i in spaced)
    assert tokenizer.encode("light", add_special_tokens=False)[0] in set(ids) - set(spaced)


def test_bias_only_on_rows_and_aspects_not_yet_said(tokenizer):
    prompt = tokenizer.encode("The answer:", add_special_tokens=False)
    said = tokenizer.encode(" The shadows", add_special_tokens=False)
    steer = AspectSteering(tokenizer, [("lighting", "background"), None], bias=3.0)
    vocab = len(tokenizer)
    scores = torch.zeros(2, vocab)
    first = steer(torch.tensor([prompt, prompt]), scores)  # the first step records the prompt's length
    light, back = (aspect_token_ids(tokenizer, c, spaced_only=True) for c in ("lighting", "background"))
    assert torch.all(first[0, light] == 3.0) and torch.all(first[0, back] == 3.0)
    assert torch.count_nonzero(first[0]) == len(light) + len(back)  # only space-led words: no "sky"+"light"
    assert torch.count_nonzero(first[1]) == 0  # a row with no aspects is left alone
    assert torch.count_nonzero(scores) == 0  # the input scores are not changed in place
    later = steer(torch.tensor([prompt + said, prompt + said]), torch.zeros(2, vocab))
    assert torch.all(later[0, light] == 0.0) and torch.all(later[0, back] == 3.0)  # lighting said: its bias is off
    unsaid = steer(torch.tensor([prompt + said[:1], prompt + said[:1]]), torch.zeros(2, vocab))
    assert torch.all(unsaid[0, light] == 3.0)  # " The" alone says nothing
    glued = prompt + tokenizer.encode("Light", add_special_tokens=False)
    assert len(glued) == len(prompt) + 1  # one token with no leading space: not nudged, but it counts as said
    assert torch.all(steer(torch.tensor([glued, glued]), torch.zeros(2, vocab))[0, light] == 0.0)
    assert torch.count_nonzero(AspectSteering(tokenizer, [("lighting",)], 0.0)(torch.tensor([prompt]),
                                                                              torch.zeros(1, vocab))) == 0
    with pytest.raises(ValueError, match="bias"):
        AspectSteering(tokenizer, [("lighting",)], -1.0)


def test_generation_says_the_aspect_then_decodes_as_plain_greedy(tokenizer):
    """A tiny random Llama with the describer's tokenizer: a large bias makes the first token a lighting word;
    from then on the steered answer is what plain greedy decoding gives after that token."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)).eval()
    prompt = torch.tensor([tokenizer.encode("Is anything unrealistic?", add_special_tokens=False)])
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    plain = model.generate(prompt, **kw)[0, prompt.shape[1]:]
    steered = model.generate(prompt, logits_processor=LogitsProcessorList(
        [AspectSteering(tokenizer, [("lighting",)], 1e4)]), **kw)[0, prompt.shape[1]:]
    assert "lighting" in mentions(tokenizer.decode(steered[:1]))
    assert "lighting" not in mentions(tokenizer.decode(plain))  # the random model would not say it by itself
    after = model.generate(torch.cat([prompt, steered[None, :1]], 1), max_new_tokens=5, do_sample=False,
                           pad_token_id=0)[0, prompt.shape[1]:]
    assert after.tolist() == steered.tolist()
