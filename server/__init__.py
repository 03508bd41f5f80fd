"""The PreZoo server: FastAPI REST API + Gradio UI + ONNX Runtime inference. Not built yet: issue #6."""
