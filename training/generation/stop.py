"""The stop rule: a sampled row ends once more tokens cannot change its tweet."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from training.generation.lock import tokenizer_lock
from training.generation.text import LAST_SPACE, NEWLINE, tidy_candidate

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

#: How far past ``max_chars`` a sampled row may run before it is stopped: room for the URLs that
#: tidying removes afterwards.
_RUNAWAY_SLACK = 200


class TweetEnd:
    """Stops each sampled row as soon as more tokens cannot change its tweet.

    That is after a newline (everything after the first one is cut), or once the part of the row
    that is settled — everything before its last whitespace, tidied as :func:`tidy_candidate`
    tidies — is already longer than ``max_chars``: the tweet is cut to ``max_chars`` at a word
    boundary from that settled part alone, so sampling on would only burn time (on CPU a long row
    costs as much as the rest of the round). A row of ``max_chars`` + ``_RUNAWAY_SLACK``
    characters with no whitespace is stopped too. A transformers ``StoppingCriteria`` by
    protocol: ``__call__`` returns one bool per row; :meth:`push` is the same rule token by
    token.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, batch: int, prompt_chars: int, max_chars: int
    ) -> None:
        self._tokenizer = tokenizer
        self._lock = tokenizer_lock(tokenizer)
        self._max_chars = max_chars
        # Characters of each row's tweet so far (the prompt's, then every sampled piece's).
        self._chars = [prompt_chars] * batch
        self._done = [False] * batch

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        import torch

        with self._lock:
            pieces = self._tokenizer.batch_decode(input_ids[:, -1:], skip_special_tokens=True)
        for row, piece in enumerate(pieces):
            if not self._done[row]:
                self._advance(row, piece, lambda row=row: input_ids[row, 1:].tolist())
        return torch.tensor(self._done, dtype=torch.bool, device=input_ids.device)

    def push(self, row: int, token_id: int, tokens: Callable[[], list[int]]) -> bool:
        """The same rule one token at a time (a backend without tensors): ``token_id`` was just
        sampled for ``row``, ``tokens()`` gives the row's ids after the leading EOS; True once
        the row is done."""
        if not self._done[row]:
            with self._lock:
                piece = self._tokenizer.decode([token_id], skip_special_tokens=True)
            self._advance(row, piece, tokens)
        return self._done[row]

    def _advance(self, row: int, piece: str, tokens: Callable[[], list[int]]) -> None:
        self._chars[row] += len(piece)
        if NEWLINE.search(piece) or self._chars[row] > self._max_chars + _RUNAWAY_SLACK:
            self._done[row] = True
        elif self._chars[row] > self._max_chars:
            # Decoded afresh from the tokens, exactly as the candidate will be judged.
            with self._lock:
                text = self._tokenizer.decode(tokens(), skip_special_tokens=True)
            self._done[row] = _settled_chars(text) > self._max_chars


def _settled_chars(text: str) -> int:
    """The tidied length of ``text``'s first line before its last whitespace (:class:`TweetEnd`).

    Tidying is word by word (URLs are whole words, whitespace collapses), so words that a
    whitespace already ends tidy the same whatever is sampled after them.
    """
    line = NEWLINE.split(text, maxsplit=1)[0]
    last = LAST_SPACE.search(line)
    if last is None:
        return 0
    return len(tidy_candidate(line[: last.start()], max_chars=len(line) + 1))
