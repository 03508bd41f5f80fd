"""Export of standalone subnets: Hugging Face folder (safetensors + config + model card), ONNX
(fp32 / INT8 / fp16) with an export cache, and Hub push."""
