"""The capture stage: microphone, file or stdin audio in; audio.frame out."""
