"""gateway: the character's HTTP and WebSocket face.

A stage like the others (services.gateway.stage) that serves an ASGI app
(services.gateway.app) on uvicorn: a control API, live events, remote microphone and
speaker, NPC dialogue over SSE. It reaches the rest of Marionette only through the bus.
"""
