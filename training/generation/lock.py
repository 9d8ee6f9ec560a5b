"""The process-wide sampling lock."""

from __future__ import annotations

import threading

# Sampling draws from torch's global random generator (``generate`` takes no generator), so every
# generation in the process holds this lock: a seeded call is then reproducible whatever other
# threads do, and the shared LoRA base is never switched to another adapter mid-generation. On CPU
# torch already spreads one generation over every core, so serialising costs no throughput.
_SAMPLING_LOCK = threading.RLock()
