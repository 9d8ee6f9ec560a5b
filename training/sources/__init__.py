"""Tweet sources: X archive, CSV/JSONL files, the X API (tweepy) and Bluesky."""
