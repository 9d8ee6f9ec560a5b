"""What of the bot's environment its child processes (training, generation) get.

Settings are read case-blind (``discord_token`` is the Discord token as much as
``DISCORD_TOKEN``), so the secrets are found the same way: every variable that a secret field
(:func:`bot.config.is_secret`) of the settings would read, compared without case, is taken out,
and so is every ``DOPPELTWEET_`` variable that is not a training setting. The names come from
the settings models, never from a list kept by hand.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from bot.config import PREFIX, BotSettings, env_names, is_secret
from bot.config import secret_env_names as _secret_env_names
from training.config import TrainingSettings

#: The training settings' secrets the training process needs (the X API source, the Hub push).
TRAINING_SECRETS = ("x_bearer_token", "hf_token")
#: The one secret the generation process needs (a gated base model on the Hub).
GENERATION_SECRETS = ("hf_token",)


def secret_env_names(kept: Collection[str] = ()) -> frozenset[str]:
    """The variables (upper-cased) of every secret setting, bot's and training's, but ``kept``."""
    return _secret_env_names((BotSettings, TrainingSettings), kept)


def training_env_names() -> frozenset[str]:
    """The variables (upper-cased) of the training settings that are not secrets."""
    return frozenset(
        env
        for name, field in TrainingSettings.model_fields.items()
        if not is_secret(field)
        for env in env_names(TrainingSettings, name)
    )


def child_environment(
    environ: Mapping[str, str], *, secrets_kept: Collection[str] = ()
) -> dict[str, str]:
    """``environ`` without the secrets (but the ``secrets_kept`` fields') and without the bot's
    own ``DOPPELTWEET_`` settings; names compared without case."""
    secrets = secret_env_names(secrets_kept)
    training = training_env_names() | {
        n for kept in secrets_kept for n in env_names(TrainingSettings, kept)
    }
    out: dict[str, str] = {}
    for key, value in environ.items():
        upper = key.upper()
        if upper in secrets:
            continue
        if upper.startswith(PREFIX) and upper not in training:
            continue
        out[key] = value
    return out
