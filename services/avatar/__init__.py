"""The avatar stage: expressions, a mouth-open track per video frame, blinks and idle."""
