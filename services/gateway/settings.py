"""gateway settings: MARIONETTE_GATEWAY_* (or [gateway] in marionette.toml).

Secure by default: without a key the gateway only listens on a loopback address, and the
keys are the only way in once it listens on anything else.
"""

import ipaddress
from typing import ClassVar

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from services.settings import MarionetteSettings

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class GatewaySettings(MarionetteSettings):
    model_config = SettingsConfigDict(env_prefix="MARIONETTE_GATEWAY_")
    toml_table: ClassVar[str | None] = "gateway"

    host: str = Field(
        default="127.0.0.1",
        description="Address to listen on. Anything but loopback needs an operator key.",
    )
    port: int = Field(default=8765, ge=0, le=65535, description="Port (0: any free one).")
    share_port: bool = Field(
        default=False,
        description="Let the gateway replicas of this machine listen on one port "
        "(SO_REUSEPORT; `up --scale gateway=N` sets it). Off, a port in use is an error: "
        "two Marionettes never answer on one port by mistake.",
    )
    operator_key: SecretStr | None = Field(
        default=None,
        description="Bearer key for everything (control, chat, audio, memory). Set it to "
        "listen beyond loopback; once set, every request needs a key.",
    )
    read_key: SecretStr | None = Field(
        default=None,
        description="Bearer key that may only read: GET /api/status and /ws/events (for an "
        "overlay). Needs operator_key too.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Web origins (https://host:port) whose pages may call the API and open "
        'its WebSockets, as a JSON list (["https://example.com"]). The gateway\'s own pages '
        "are always allowed.",
    )
    max_body_bytes: int = Field(
        default=64 * 1024, ge=1024, le=16 * 1024 * 1024, description="Largest request body."
    )
    chat_per_minute: int = Field(
        default=30, ge=1, description="Chat and say requests a client may make a minute."
    )
    dialogue_per_minute: int = Field(
        default=60, ge=1, description="NPC dialogue requests a client may make a minute."
    )
    audio_streams_per_client: int = Field(
        default=4, ge=1, description="/ws/audio connections a client may hold at once."
    )
    dialogue_timeout_s: float = Field(
        default=60.0, gt=0, le=600, description="An NPC reply not finished by then ends "
        "with an error event.",
    )  # fmt: skip
    recent_turns: int = Field(
        default=20, ge=1, le=500, description="Turns /api/status reports, newest first."
    )

    # Field validators (not a model validator) so the error names the variable to set.
    @field_validator("operator_key")
    @classmethod
    def _secure_by_default(cls, key: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        host = info.data.get("host", "127.0.0.1")
        if key is None and not is_loopback(host):
            raise ValueError(
                f"the gateway listens on {host!r}, which is not loopback: set this key (a "
                "long random string) to listen there, or keep MARIONETTE_GATEWAY_HOST=127.0.0.1"
            )
        if key is not None and len(key.get_secret_value()) < 16:
            raise ValueError("a key must be at least 16 characters long")
        return key

    @field_validator("read_key")
    @classmethod
    def _read_needs_operator(cls, key: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if key is None:
            return None
        if info.data.get("operator_key") is None:
            raise ValueError(
                "a read key needs MARIONETTE_GATEWAY_OPERATOR_KEY as well (without one nobody "
                "could control the character)"
            )
        if len(key.get_secret_value()) < 16:
            raise ValueError("a key must be at least 16 characters long")
        return key

    @property
    def keyed(self) -> bool:
        return self.operator_key is not None

    @property
    def url(self) -> str:
        """Where it will listen (port 0: the stage logs the port it got)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port or 'PORT'}"
