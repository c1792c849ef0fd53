"""``python -m moderation``: the ``commons-moderation`` command."""

from moderation.cli import app

app(prog_name="commons-moderation")
