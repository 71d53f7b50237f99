"""Vision: what a camera or a picture shows, as words and labels (vision.observation)."""
