"""The bot's side of ``doppeltweet serve``: generators that are HTTP clients of it.

With ``DOPPELTWEET_GENERATION_URL`` set, the model cache's loader (:func:`remote_loader`) returns a
:class:`RemoteGenerator` for each model folder instead of loading it: ``generate`` posts an
OpenAI completions request whose ``model`` is the folder relative to ``DOPPELTWEET_DATA_DIR``, and
the ``serve_multiplexed_model_id`` header adds the folder's identity, so a retrained model (a new
folder) is a new model for the server and the request goes to a replica that holds it. The
server applies the project's filters, so the tweets are those local generation would give.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from training.errors import InputError, ModelError

if TYPE_CHECKING:
    from bot.config import BotSettings
    from training.generation import GenerationResult

MODEL_HEADER = "serve_multiplexed_model_id"


def model_id(data_dir: Path, model_dir: Path) -> str:
    """A model folder's name on the server: its path relative to the data folder."""
    try:
        relative = Path(model_dir).resolve().relative_to(Path(data_dir).resolve())
    except ValueError as error:
        raise ModelError(
            "Only models inside the data folder can be generated from on the generation server."
        ) from error
    return relative.as_posix()


def _version(path: Path) -> str:
    try:
        info = os.stat(path)
    except OSError:
        return "0"
    return f"{info.st_ino}-{info.st_mtime_ns}"


class RemoteGenerator:
    """A model served by a generation server; what :class:`bot.model_cache.ModelCache` needs."""

    def __init__(
        self,
        base_url: str,
        model: str,
        version: str,
        *,
        timeout_s: float,
        token: str | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/v1/completions"
        self.base_url = base_url
        self.model = model
        self.version = version
        self.timeout_s = timeout_s
        self._session = requests.Session()
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"

    @property
    def memory_bytes(self) -> int:
        """The memory the bot spends on it: none, the model lives on the server."""
        return 1

    def generate(
        self, prompt: str, *, n: int = 1, seed: int | None = None, exclude: Collection[str] = ()
    ) -> GenerationResult:
        """Ask the server for ``n`` tweets; errors come back as one sentence."""
        from training.generation import GenerationResult

        body: dict[str, Any] = {"model": self.model, "prompt": prompt, "n": n}
        if seed is not None:
            body["seed"] = seed
        if exclude:
            body["exclude"] = list(exclude)
        headers = {MODEL_HEADER: f"{self.model}@{self.version}"}
        try:
            response = self._session.post(
                self.url, json=body, headers=headers, timeout=self.timeout_s
            )
        except requests.RequestException as error:
            raise ModelError(
                f"The generation server at {self.base_url} did not answer; try again in a moment."
            ) from error
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code == 401:
            raise ModelError(
                f"The generation server at {self.base_url} refused the bot's token; set "
                "DOPPELTWEET_GENERATION_TOKEN to the server's."
            )
        if response.status_code != 200 or not isinstance(data, dict):
            error = data.get("error") if isinstance(data, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            if not isinstance(message, str) or not message:
                message = (
                    f"The generation server at {self.base_url} answered with status "
                    f"{response.status_code}; try again in a moment."
                )
            raise (InputError if response.status_code == 400 else ModelError)(message)
        choices = data.get("choices")
        if not isinstance(choices, list):
            raise ModelError(f"The generation server at {self.base_url} answered without choices.")
        tweets = [
            c["text"] for c in choices if isinstance(c, dict) and isinstance(c.get("text"), str)
        ]
        extra = data.get("doppeltweet") if isinstance(data.get("doppeltweet"), dict) else {}
        reasons = extra.get("rejected_reasons")
        return GenerationResult(
            prompt=str(extra.get("prompt", prompt)),
            tweets=tweets,
            candidates=int(extra.get("candidates", len(tweets))),
            rejected=int(extra.get("rejected", 0)),
            rejected_reasons=dict(reasons) if isinstance(reasons, dict) else {},
        )


def remote_loader(settings: BotSettings) -> Callable[[Path], RemoteGenerator]:
    """The model cache's loader when ``DOPPELTWEET_GENERATION_URL`` is set."""
    if not settings.generation_url:
        raise ValueError("remote generation needs DOPPELTWEET_GENERATION_URL")
    url = settings.generation_url
    data_dir = settings.data_dir
    token = (
        settings.generation_token.get_secret_value().strip() if settings.generation_token else ""
    )

    def load(path: Path) -> RemoteGenerator:
        return RemoteGenerator(
            url,
            model_id(data_dir, path),
            _version(path),
            timeout_s=settings.generation_timeout_s,
            token=token or None,
        )

    return load
