# Placeholder until issue #7 (GPU deployment): the real image will use a CUDA runtime base,
# torch + onnxruntime-gpu pinned together, a non-root user, a HEALTHCHECK and the README's server command.
FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN bash setup.sh
CMD [".venv/bin/python", "-m", "server", "--host", "0.0.0.0"]
