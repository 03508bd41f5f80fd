# PreZoo server image: the default zoo baked in, ONNX Runtime on the GPU when the container gets one.
#   docker build -t prezoo .
#   docker run --gpus all -p 7860:7860 prezoo     # CUDA (TensorRT too when its libraries are added), UI on :7860
#   docker run -p 7860:7860 prezoo                # the same image on CPU (health says why)
#   docker run -p 7860:7860 prezoo --zoo org/name # any `python -m server` option
# Versions, matched to each other (README, "GPU image"): CUDA 13.0 + cuDNN 9 runtime on Ubuntu 24.04 (Python 3.12),
# torch 2.14.1 (its PyPI wheel is built for CUDA 13.0), onnxruntime-gpu 1.31.1 (built for CUDA 13 and cuDNN 9).
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    PREZOO_HOST=0.0.0.0 \
    PREZOO_PORT=7860

# Python and curl (for the health check) from the distribution; their versions follow the base image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY . /app
# The README's install, as root (it installs apt packages), without the test tools and with onnxruntime-gpu.
RUN bash setup.sh --serve --gpu \
    && .venv/bin/python -m compileall -q zoo training export server prezoo \
    && rm -rf /var/lib/apt/lists/* /root/.cache \
    && useradd --no-log-init --create-home --uid 10001 --shell /usr/sbin/nologin prezoo

USER 10001
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["sh", "-c", "curl -fsS http://127.0.0.1:${PREZOO_PORT}/api/health || exit 1"]
ENTRYPOINT [".venv/bin/prezoo", "serve"]
