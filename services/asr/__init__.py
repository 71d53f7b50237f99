"""The asr stage: voice activity, endpointing and streaming speech recognition."""
