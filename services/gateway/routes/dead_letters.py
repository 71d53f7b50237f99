"""Dead letters: what a stage gave up on, and putting it back (as `marionette dlq` does).

    GET  /api/dead-letters?topic=policy.token&limit=100   (read key)
    POST /api/dead-letters/policy.token/redrive {"id": "1796...-0"}   (operator key)

A dead letter is kept whole in its topic's DLQ stream (services.bus.dead_letters); the
listing shows why it failed and a short preview of its payload, never the payload itself.
Redriving puts an entry back on the stream it came from (it is handled again, even if a
newer message of its session was handled since) and removes it from the DLQ; without an
`id`, every dead letter of the topic goes back.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from contracts.limits import MAX_ID_CHARS
from contracts.topics import ALL_TOPICS, topic_named
from services.bus import dead_letters as dlq
from services.gateway.link import BusLink
from services.gateway.security import Access, requires

router = APIRouter(prefix="/api/dead-letters", tags=["dead letters"])
Reader = Annotated[str, Depends(requires(Access.READ))]
Operator = Annotated[str, Depends(requires(Access.OPERATE))]
TOPICS = ", ".join(t.name for t in ALL_TOPICS)
EntryId = Annotated[
    str, Field(pattern=r"^[0-9]{1,20}-[0-9]{1,20}$", max_length=MAX_ID_CHARS,
               description="A dead letter's id (`dlq_id` in the listing).")
]  # fmt: skip


class FieldError(HTTPException):
    """An error naming the part of the request at fault (`fields` in the answer)."""

    def __init__(self, status: int, field: str, problem: str) -> None:
        super().__init__(status, problem)
        self.fields = [{"field": field, "problem": problem}]


class DeadLetterInfo(BaseModel):
    dlq_id: str = Field(description="Its id in the DLQ stream: what redrive takes.")
    topic: str
    reason: str = Field(description="Why the stage gave up on it.")
    delivery_count: int = Field(description="How many times it was delivered.")
    group: str = Field(description="The consumer group (stage) that gave up.")
    consumer: str
    source_stream: str
    source_id: str = Field(description="Its entry id on the stream it came from.")
    failed_at: str = Field(description="When it was dead-lettered (ISO 8601, UTC).")
    payload_bytes: int
    payload_preview: str = Field(description="The end of its payload, as text.")


class DeadLetterList(BaseModel):
    topic: str | None = Field(description="The topic asked for; null: all topics.")
    dead_letters: list[DeadLetterInfo]


class RedriveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: EntryId | None = Field(default=None, description="Only this one; default: all of them.")


class RedriveAnswer(BaseModel):
    topic: str
    redriven: list[str] = Field(description="The dead letters put back (their dlq_id).")
    count: int


def known_topic(name: str, field: str) -> str:
    try:
        return topic_named(name).name
    except ValueError as exc:
        raise FieldError(404 if field.startswith("path") else 422, field, str(exc)) from None


def link_of(request: Request) -> BusLink:
    link: BusLink = request.app.state.link
    return link


@router.get("", response_model=DeadLetterList)
async def list_dead_letters(
    request: Request,
    who: Reader,
    topic: Annotated[str | None, Query(description=f"One of: {TOPICS}; default: all.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many per topic.")] = 100,
) -> DeadLetterList:
    """Dead letters, oldest first: id, reason, delivery count, when, a payload preview."""
    names = [known_topic(topic, "query.topic")] if topic else [t.name for t in ALL_TOPICS]
    client = link_of(request).client
    found: list[dict[str, Any]] = []
    for name in names:
        found.extend(
            letter.as_json() for letter in await dlq.list_dead_letters(client, name, limit)
        )
    letters = [DeadLetterInfo(**letter) for letter in found]
    return DeadLetterList(topic=names[0] if topic else None, dead_letters=letters)


@router.post("/{topic}/redrive", response_model=RedriveAnswer)
async def redrive(
    topic: Annotated[str, Path(max_length=64, description=f"One of: {TOPICS}.")],
    request: Request,
    who: Operator,
    body: RedriveRequest | None = None,
) -> RedriveAnswer:
    """Put a topic's dead letters (or the one named) back on their stream, to be handled again."""
    name = known_topic(topic, "path.topic")
    wanted = [body.id] if body is not None and body.id is not None else None
    put_back = await dlq.redrive(link_of(request).client, name, wanted)
    if wanted is not None and not put_back:
        problem = f"no dead letter {wanted[0]!r} of {name} (re-driven already?)"
        raise FieldError(404, "body.id", problem)
    ids = [letter.dlq_id for letter in put_back]
    return RedriveAnswer(topic=name, redriven=ids, count=len(ids))
