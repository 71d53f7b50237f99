"""The persona as the gateway sees it: the live one (what policy uses), the files it can
switch to, and a change checked before it goes out (so a bad edit is refused with the
field named, instead of being dropped by policy)."""

from pathlib import Path
from typing import Any

from services.bus.stage import KeyValue
from services.policy.persona import Persona, PersonaStore, load_persona_file
from services.policy.settings import PolicySettings
from services.settings import load_settings


class PersonaFiles:
    def __init__(self, store: PersonaStore) -> None:
        self.store = store

    @classmethod
    def from_settings(cls, client: KeyValue) -> "PersonaFiles":
        settings = load_settings(PolicySettings)
        return cls(PersonaStore(client, settings.persona_file, settings.personas_dir))

    def names(self) -> list[str]:
        return sorted(path.stem for path in Path(self.store.personas_dir).glob("*.toml"))

    def path(self, name: str) -> Path:
        path = Path(self.store.personas_dir) / f"{name}.toml"
        if not path.is_file():
            raise LookupError(f"no persona {name!r}; personas: {', '.join(self.names())}")
        return path

    async def current(self) -> Persona:
        return await self.store.current()

    async def preview(self, name: str | None, edits: dict[str, Any]) -> Persona:
        """The persona a change would make (LookupError: no such file; ValidationError:
        a bad edit)."""
        base = load_persona_file(self.path(name)) if name else await self.store.current()
        return Persona.model_validate({**base.model_dump(), **edits})
