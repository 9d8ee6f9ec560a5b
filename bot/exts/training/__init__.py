"""``!train`` and the other training commands (:mod:`._cog`), and what their messages say
(:mod:`._reports`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.exts.training._cog import Training

if TYPE_CHECKING:
    from bot.client import DoppeltweetBot


async def setup(bot: DoppeltweetBot) -> None:
    """Load the training cog."""
    await bot.add_cog(Training(bot))
