"""What the training commands and the job status messages say: titles, progress, the queue, the
finished job's report and a failure's sentence."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from bot.formatting import (
    data_table_block,
    escape_user_text,
    format_duration,
    perplexity_line,
    progress_text,
)
from bot.jobs import JobResult
from bot.public_errors import public_message
from bot.store import Job

if TYPE_CHECKING:
    pass

#: Phases whose progress message is meant for people (others may name server paths).
_PHASES_WITH_MESSAGES = frozenset({"queued", "fetching", "cleaning", "loading"})

#: The report's last line when Discord refused its image.
LOSS_CURVE_MISSING = "_The loss curve could not be uploaded._"


def job_title(job: Job) -> str:
    """``Job #3 · jack-bob`` — how a job is named in messages."""
    return f"Job #{job.id} · {escape_user_text(job.model_name)}"


def discord_time(unix_s: float) -> str:
    """A time Discord shows in each reader's own words and zone, kept current (``in 5 minutes``)."""
    return f"<t:{int(unix_s)}:R>"


def budget_line(job: Job, budget_s: float | None) -> str | None:
    """``Budget 5m 00s · ready <t:…:R>`` for a running job with a time budget."""
    if budget_s is None or job.state != "running" or job.started_at is None:
        return None
    ready = job.started_at.timestamp() + budget_s
    return f"Budget {format_duration(budget_s)} · ready {discord_time(ready)}"


def status_text(job: Job, event: dict[str, Any] | None, budget_s: float | None = None) -> str:
    """The status message of a job for its last progress event (or its state); a running job
    with a time budget also shows the budget and when it will be ready."""
    fields = event or {}
    phase = fields.get("phase") or ("queued" if job.state == "queued" else "starting")
    budget = budget_line(job, budget_s)
    # Notes (a base that does not write the person's language) stay in every later event.
    notes = fields.get("notes")
    notes = [str(n) for n in notes if n] if isinstance(notes, list) else []
    message = (
        public_message(str(fields["message"]))
        if phase in _PHASES_WITH_MESSAGES and fields.get("message") not in (None, "", *notes)
        else None
    )
    text = progress_text(
        title=job_title(job),
        phase=str(phase),
        step=fields.get("step"),
        total=fields.get("total"),
        loss=fields.get("loss"),
        eta_s=fields.get("eta_s"),
        message=message,
    )
    notes_text = "\n".join(f"⚠️ {escape_user_text(public_message(n))}" for n in notes)
    lines = [text, *([budget] if budget else []), *([notes_text] if notes else [])]
    return "\n".join(lines)[:2000]


def queued_text(job: Job, starts_in_s: float | None = None, now: float | None = None) -> str:
    """The first status of a job: it starts at once, or waits behind others (and, with time
    budgets, says when it is expected to start)."""
    if job.position:
        ahead = job.position - 1
        waits = f"{ahead} job{'s' if ahead != 1 else ''} ahead" if ahead else "next in line"
        return f"**{job_title(job)}** — Queued: {waits}{_expected_start(starts_in_s, now)}."
    return f"**{job_title(job)}** — Starting."


def queue_line(job: Job, starts_in_s: float | None = None, now: float | None = None) -> str:
    """``2. Job #5 · jack — by @member; expected to start <t:…:R>`` in ``!jobs``."""
    return (
        f"{job.position or '?'}. {job_title(job)} — by <@{job.user_id}>"
        f"{_expected_start(starts_in_s, now)}"
    )


def _expected_start(starts_in_s: float | None, now: float | None) -> str:
    if starts_in_s is None:
        return ""
    return f"; expected to start {discord_time((now or time.time()) + starts_in_s)}"


def failure_text(job: Job, message: str) -> str:
    """A failed job's status: the sentence, and the data table when the tweets were read."""
    lines = [f"**{job_title(job)}** — Failed: {escape_user_text(message)}"]
    table = (job.progress or {}).get("table")
    if isinstance(table, dict) and table and all(isinstance(v, dict) for v in table.values()):
        lines.append(data_table_block(table))
    return "\n".join(lines)[:2000]


def summary_text(job: Job, result: JobResult) -> str:
    """The finished job's report: the data table and validation perplexity before → after."""
    lines = [f"**{escape_user_text(job.model_name)}** is trained."]
    if result.table:
        lines.append(data_table_block(result.table))
    ppl = perplexity_line(result.perplexity_before, result.perplexity_after)
    if ppl:
        lines.append(ppl)
    lines += [escape_user_text(sentence) for sentence in record_sentences(job, result.record)]
    return "\n".join(lines)


def record_sentences(job: Job, record: dict[str, Any]) -> list[str]:
    """From ``training.json``: how recognisable the model is, and the base's language warning."""
    from training.recognisability import recognisability_sentence

    sentences = []
    likeness = record.get("likeness")
    figure = likeness.get("recognisability") if isinstance(likeness, dict) else None
    if isinstance(figure, dict):
        who = " & ".join(h.display for h in job.handles) if job.handles else job.model_name
        sentence = recognisability_sentence(figure, who)
        if sentence:
            sentences.append(sentence)
    languages = record.get("languages")
    warning = languages.get("warning") if isinstance(languages, dict) else None
    if isinstance(warning, str) and warning:
        sentences.append(f"⚠️ {warning}")
    return sentences
