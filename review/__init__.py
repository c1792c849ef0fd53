"""The moderators' review page: a small server-rendered app over the score store."""
