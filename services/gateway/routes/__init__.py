"""The gateway's routes, one module per family: status, control, events, audio, dialogue."""
