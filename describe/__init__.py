"""The describer: an open vision-language model that writes realness descriptions (planned).

It will hold the prompt and its output contract, LoRA/QLoRA fine-tuning pieces, the vLLM and
transformers engines, and the resumable annotation client. Until then, CORE reads descriptions from
a CSV/JSONL (written by GPT-4.1, by people, or by any VLM).
"""
