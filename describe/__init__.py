"""The describer: an open vision-language model fine-tuned to write realness descriptions.

    describe.prompt       the question and the chat messages (the answer contract: `realness.answers`)
    describe.chat         chat-template rendering and answer-only labels (`TrainCollator`)
    describe.data         GPT / human source mixing, split by image
    describe.modeling     base model loading (bf16 or 4-bit NF4) and LoRA that vLLM can serve
    describe.small        the bundled offline describer (SmolLM2-135M + EfficientNet-Lite0)
    describe.tiny         tiny random VLMs built from configs, for tests
    describe.realsize     real-size architectures with random weights, for benchmarks
    describe.training     `train_describer` (transformers Trainer under accelerate)
    describe.engines      the engines behind one interface: `transformers` (`Describer`) and `vllm`
    describe.verdict      the verdict guide: image-only CORE sets each answer's verdict
    describe.describer    `describe_folder` (`realness describe`)
    describe.annotate     resumable annotation through servers, an engine, or Ray (`realness annotate`)
    describe.serve        the OpenAI-compatible vLLM server (`realness serve`)
    describe.adapters     inspect / check / merge adapters

The package sits above the base layer and the models (`realness.core`, `realness.dream`) and below the
applications (`realness.pipeline`, `realness.cli`); `tests/test_layers.py` holds it there. Heavy libraries
(transformers, peft, bitsandbytes, vLLM) are imported inside the functions that need them.
"""
