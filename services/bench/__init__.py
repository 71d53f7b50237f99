"""`marionette bench`: voice-to-voice latency of the live pipeline, with its breakdown."""
