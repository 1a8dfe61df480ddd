"""The describer: an open vision-language model fine-tuned to write realness descriptions.

    describe.prompt      the question, the Yes/No/Somewhat contract, `parse_answer`
    describe.chat        chat-template rendering and answer-only labels (`TrainCollator`)
    describe.data        GPT / human source mixing, split by image
    describe.modeling    base model loading (bf16 or 4-bit NF4) and LoRA that vLLM can serve
    describe.training    `train_describer` (transformers Trainer under accelerate)
    describe.describer   `Describer`: batched generation with transformers (the CPU engine)
    describe.adapters    inspect / check / merge adapters

Heavy libraries (transformers, peft, bitsandbytes) are imported inside the functions that need them.
"""
