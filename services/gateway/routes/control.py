"""Control API: persona, modules, say, chat, interrupt, panic.

Each call is validated here, goes out as one typed message (control, chat.message or
policy.token) and is answered with what was published; the stages do the rest.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from contracts import ChatMessage, Control, Interrupt, ModuleToggle, Panic, PersonaChange
from contracts.chat import Platform
from contracts.envelope import Identifier
from contracts.limits import MAX_AUTHOR_CHARS, MAX_CHAT_CHARS
from contracts.policy import ExpressionTag, scripted_reply
from contracts.topics import PLAYBACK_PROGRESS, POLICY_TOKEN, TTS_CHUNK
from contracts.turns import playback_ended
from services.gateway.link import GLOBAL_SESSION, BusLink, new_id
from services.gateway.security import Access, requires
from services.registry import MODULES

router = APIRouter(prefix="/api", tags=["control"])
Operator = Annotated[str, Depends(requires(Access.OPERATE))]
Text = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_CHAT_CHARS, strip_whitespace=True)
]


class RequestBody(BaseModel):
    """A request body: an unknown field is an error that names it, never ignored."""

    model_config = ConfigDict(extra="forbid")


class Published(BaseModel):
    """What a call put on the bus."""

    topic: str
    entry_id: str | None
    message: dict[str, Any]


class PersonaRequest(RequestBody):
    persona: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = Field(
        default=None, description="A persona file to switch to (its name, without .toml)."
    )
    edits: dict[str, str | float | bool | list[str]] = Field(
        default_factory=dict, max_length=16,
        description="Persona fields to change: energy, chaos, family_friendly, style...",
    )  # fmt: skip


class PersonaAnswer(BaseModel):
    published: Published
    persona: dict[str, Any] = Field(description="The persona as it will be once applied.")


class ModuleRequest(RequestBody):
    enabled: bool


class SayRequest(RequestBody):
    text: Text = Field(description="Spoken as the character's words, without the LLM.")
    session: Identifier = "local"
    expression: ExpressionTag | None = Field(default=None, description="e.g. happy")


class ChatRequest(RequestBody):
    text: Text
    author: Annotated[str, StringConstraints(min_length=1, max_length=MAX_AUTHOR_CHARS)] = (
        "operator"
    )
    session: Identifier = "local"
    platform: Platform = "control_panel"


class TurnAnswer(BaseModel):
    turn_id: str
    published: list[Published]


class InterruptRequest(RequestBody):
    session: Identifier = "local"
    turn_id: Identifier | None = Field(
        default=None, description="The turn to stop; default: the session's current reply."
    )


class PanicRequest(RequestBody):
    engaged: bool = Field(default=True, description="False lifts the panic.")


def link_of(request: Request) -> BusLink:
    link: BusLink = request.app.state.link
    return link


def control(command: Any, session: str = GLOBAL_SESSION) -> Control:
    return Control(session_id=session, message_id=f"{new_id('control')}:0", seq=0, command=command)


@router.post("/persona", response_model=PersonaAnswer)
async def change_persona(body: PersonaRequest, request: Request, who: Operator) -> PersonaAnswer:
    """Switch to a persona file and/or change some fields (checked before it goes out)."""
    if body.persona is None and not body.edits:
        raise HTTPException(422, "give `persona`, `edits`, or both")
    link = link_of(request)
    try:
        persona = await link.personas.preview(body.persona, body.edits)
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from None
    except ValidationError as exc:
        fields = [{"field": "body.edits." + ".".join(map(str, e["loc"])), "problem": e["msg"]}
                  for e in exc.errors()]  # fmt: skip
        raise _Invalid(fields) from None
    command = PersonaChange(persona=body.persona, edits=body.edits)
    published = await link.publish(control(command))
    return PersonaAnswer(published=Published(**published), persona=persona.model_dump(mode="json"))


@router.post("/modules/{name}", response_model=Published)
async def toggle_module(
    name: Annotated[str, Path(description="A stage or integration: " + ", ".join(MODULES))],
    body: ModuleRequest, request: Request, who: Operator,
) -> Published:  # fmt: skip
    """Switch a module off (a muted tts speaks nothing, a paused policy answers nothing) or on."""
    if name not in MODULES:
        raise HTTPException(404, f"no module {name!r}; modules: {', '.join(MODULES)}")
    published = await link_of(request).publish(
        control(ModuleToggle(module=name, enabled=body.enabled))
    )
    return Published(**published)


@router.post("/panic", response_model=Published)
async def panic(body: PanicRequest, request: Request, who: Operator) -> Published:
    """Stop speaking at once, drop what is queued, and take no input until lifted."""
    return Published(**await link_of(request).publish(control(Panic(engaged=body.engaged))))


@router.post("/interrupt", response_model=Published)
async def interrupt(body: InterruptRequest, request: Request, who: Operator) -> Published:
    """Stop a turn everywhere: generation, speech, playback, mouth."""
    link = link_of(request)
    turn = body.turn_id or await current_turn(link, body.session)
    if turn is None:
        raise HTTPException(409, f"session {body.session!r} has no reply in progress")
    command = Interrupt(target_turn_id=turn, reason="operator")
    return Published(**await link.publish(control(command, body.session)))


@router.post("/chat", response_model=TurnAnswer)
async def chat(body: ChatRequest, request: Request, who: Operator) -> TurnAnswer:
    """A chat line from a viewer or the operator: the character answers it as a turn."""
    link = link_of(request)
    link.chat_limit.check(who, "chat")
    turn = new_id("chat")
    message = ChatMessage(
        session_id=body.session, turn_id=turn, seq=0, platform=body.platform,
        author=body.author, text=body.text,
    )  # fmt: skip
    return TurnAnswer(turn_id=turn, published=[Published(**await link.publish(message))])


@router.post("/say", response_model=TurnAnswer)
async def say(body: SayRequest, request: Request, who: Operator) -> TurnAnswer:
    """Speak this text as the character (tts, avatar and playback take it like a reply)."""
    link = link_of(request)
    link.chat_limit.check(who, "say")
    turn = new_id("say")
    tokens = scripted_reply(body.session, turn, body.text, body.expression)
    published = [Published(**await link.publish(token)) for token in tokens]
    return TurnAnswer(turn_id=turn, published=published)


async def current_turn(link: BusLink, session: str) -> str | None:
    """The session's newest turn whose reply is still being made or played, if any."""
    ended: set[str] = set()
    newest: tuple[tuple[int, int], str] | None = None  # (entry order, turn)
    for topic in (PLAYBACK_PROGRESS, POLICY_TOKEN, TTS_CHUNK):
        async for event in link.tail.latest(topic, session, count=50):
            turn = event.message.turn_id
            if turn is None:
                continue
            if playback_ended(event.message):
                ended.add(turn)
            elif turn not in ended and (newest is None or event.order > newest[0]):
                newest = (event.order, turn)
    return newest[1] if newest is not None and newest[1] not in ended else None


class _Invalid(HTTPException):
    def __init__(self, fields: list[dict[str, str]]) -> None:
        super().__init__(422, "invalid request: " + ", ".join(f["field"] for f in fields))
        self.fields = fields
