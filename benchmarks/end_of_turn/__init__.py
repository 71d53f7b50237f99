"""End-of-turn accuracy: a labelled set of pauses (synthetic and real human speech) and a
benchmark of asr's decision on it (`python -m benchmarks.end_of_turn`)."""
