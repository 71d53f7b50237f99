"""discord: a Discord bot for the character (text in and out, and its voice in a channel)."""
