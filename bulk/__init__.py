"""Feeding the score store from Commons in bulk, through the scoring service: the resumable
backfill (``commons-backfill``) and what it shares with other bulk clients."""
