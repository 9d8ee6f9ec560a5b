"""Prompts and generation settings: what is refused."""

from __future__ import annotations

import pytest

from training.errors import InputError
from training.generation import (
    MAX_PROMPT_CHARS,
    GenerationSettings,
    check_prompt,
)

# Per test, because training in shared fixtures sets torch to every core again.
pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_check_prompt_lets_the_model_open_and_refuses_overlong_prompts() -> None:
    for empty in ("", "   \n\t "):
        assert check_prompt(empty) == ""  # no prompt: the person's own opening
    with pytest.raises(InputError, match="text"):
        check_prompt(None)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=str(MAX_PROMPT_CHARS)):
        check_prompt("word " * 60)
    assert check_prompt("  My   dream\nis ") == "My dream is"


def test_generation_settings_refuse_nonsense() -> None:
    with pytest.raises(InputError, match="top_p"):
        GenerationSettings(top_p=0)
    with pytest.raises(InputError, match="min_length"):
        GenerationSettings(min_length=200)
