"""The tts stage: speakable units from streamed tokens, synthesized as they complete."""
