"""One trace per turn: FastStream's telemetry middleware, told which topics make spans.

FastStream's middleware makes a span for every message published and handled, and puts
the W3C `traceparent` in the headers. Done for every audio frame and every token, that
would bury a turn under thousands of spans, so each topic says how it is traced
(contracts.topics.Topic.tracing):

- "spans" / "opens": FastStream's spans, but only inside a trace (a blink of the avatar
  or a message from an untraced tool stays out of traces); an "opens" topic (chat, control)
  starts a trace when its message has none.
- "context": the trace context travels in the headers and becomes the handler's current
  context, with no span of its own.
- "off": nothing.

Every handler span also gets the session and turn of the message it handles, which is
how `marionette trace` finds a turn.
"""

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from faststream.opentelemetry.middleware import BaseTelemetryMiddleware
from faststream.redis.opentelemetry import RedisTelemetryMiddleware
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from contracts.envelope import Envelope
from contracts.topics import Tracing
from services.bus.causes import current_cause
from services.bus.partitions import topic_of_stream

SESSION_ATTRIBUTE = "marionette.session_id"
TURN_ATTRIBUTE = "marionette.turn_id"
QUEUED_ATTRIBUTE = "marionette.queued_ms"  # from XADD until this consumer read it

handled_envelope: ContextVar[Envelope | None] = ContextVar("marionette_envelope", default=None)
"""The envelope of the entry the current handler is handling (set by the delivery loop)."""

_PROPAGATOR = TraceContextTextMapPropagator()


def tracing_of(stream: str) -> Tracing:
    topic = topic_of_stream(stream)
    return "spans" if topic is None else topic.tracing


def in_trace() -> bool:
    return trace.get_current_span().get_span_context().is_valid


def turn_attributes(session_id: str, turn_id: str | None) -> dict[str, str]:
    attributes = {SESSION_ATTRIBUTE: session_id}
    if turn_id:
        attributes[TURN_ATTRIBUTE] = turn_id
    return attributes


class TopicTracingMiddleware(RedisTelemetryMiddleware):
    """RedisTelemetryMiddleware that follows each topic's tracing mode."""

    def __call__(self, msg: Any | None, /, *, context: Any) -> "_TopicTracingScope":
        # Private attributes of faststream==0.7.8's TelemetryMiddleware (pinned).
        return _TopicTracingScope(
            msg,
            tracer=self._tracer,
            settings_provider_factory=self._settings_provider_factory,
            metrics_container=self._metrics,
            context=context,
        )


class _TopicTracingScope(BaseTelemetryMiddleware[Any]):
    async def consume_scope(self, call_next: Callable[[Any], Awaitable[Any]], msg: Any) -> Any:
        mode = tracing_of(str(msg.raw_message.get("channel", "")))
        if mode == "off":
            return await call_next(msg)
        carried = _PROPAGATOR.extract(msg.headers)
        if mode == "context" or (mode == "spans" and not len(carried)):
            token = otel_context.attach(carried)
            try:
                return await call_next(msg)
            finally:
                otel_context.detach(token)

        async def tagged(message: Any) -> Any:
            span = trace.get_current_span()
            envelope = handled_envelope.get()
            if envelope is not None:
                span.set_attributes(turn_attributes(envelope.session_id, envelope.turn_id))
            cause = current_cause.get()
            if cause is not None:
                span.set_attribute(
                    QUEUED_ATTRIBUTE, round((cause.read_at - cause.added_at) * 1000, 1)
                )
            return await call_next(message)

        return await super().consume_scope(tagged, msg)

    async def publish_scope(self, call_next: Callable[[Any], Awaitable[Any]], msg: Any) -> Any:
        mode = tracing_of(str(msg.destination))
        if mode == "off" or (mode == "spans" and not in_trace()):
            return await call_next(msg)
        if mode == "context":
            _PROPAGATOR.inject(msg.headers)
            return await call_next(msg)
        return await super().publish_scope(call_next, msg)
