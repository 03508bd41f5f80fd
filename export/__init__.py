"""Export of standalone subnets: Hugging Face safetensors layout, ONNX (fp32/INT8/fp16), Hub push.

Not built yet: see issue #5."""
