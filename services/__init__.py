"""Marionette's stages, one package each, and the bus runtime they share."""
