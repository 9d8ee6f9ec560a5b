"""``python -m training`` is the ``doppeltweet`` CLI (the bot's background process runs this)."""

import sys

from training.cli import main

sys.exit(main())
