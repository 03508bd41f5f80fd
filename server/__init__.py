"""The PreZoo server: FastAPI REST API under /api, Gradio UI at /, ONNX Runtime inference.

    python -m server [--zoo DIR|org/name|NAME ...] [--host 127.0.0.1] [--port 7860] [--admin-token-env NAME]

Serves every zoo --zoo names (default: every shipped zoo) as one catalog (zoo.catalog): one budget, one Pareto
front, ids looked up across them.

`server.app.create_app` builds the ASGI app. Gradio's analytics and Hugging Face telemetry are switched off here,
before any submodule imports gradio or huggingface_hub (both read these variables at import), so the server
makes no outbound calls except a Hub push or pull someone asked for.
"""

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
