"""Model files shipped in Python packages: joined once into a cache folder, sha256-checked.

`catalog.MODELS` lists every model Marionette can use; `marionette models` reads it.
"""

from services.models.files import ModelMissing, PartedModel, cache_dir, file_sha256, prepare

__all__ = ["ModelMissing", "PartedModel", "cache_dir", "file_sha256", "prepare"]
