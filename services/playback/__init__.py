"""The playback stage: the reply's audio to the speakers, or to one WAV file per turn."""
