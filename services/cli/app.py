"""`marionette`: run the character, feed it, and look inside it.

The commands live beside what they drive: stages.py (run, up), inputs.py (capture, chat,
devices), inspect.py (models, trace, dlq, asyncapi, docs), and the tools' own packages
(bench, replay, chaos, vts).
"""

import typer

from services.bench.command import bench
from services.chaos.command import chaos
from services.cli import deploy, inputs, inspect, stages
from services.cli import memory as memory_command
from services.cli import mic as mic_command
from services.replay.command import record, replay
from services.vts.command import vts_app

app = typer.Typer(help="Marionette: a live AI character on Redis Streams.", no_args_is_help=True)
app.command()(stages.up)
app.command()(stages.run)
app.command("chat")(inputs.chat)
app.command("capture")(inputs.capture)
app.command()(inputs.devices)
app.command()(mic_command.mic)
app.command()(inspect.models)
app.command("trace")(inspect.trace_command)
app.add_typer(inspect.dlq_app, name="dlq")
app.add_typer(vts_app, name="vts")
app.add_typer(memory_command.memory_app, name="memory")
app.command()(inspect.asyncapi)
app.command()(inspect.docs)
app.command("redis-acl")(deploy.redis_acl)
app.command()(bench)
app.command()(chaos)
app.command()(record)
app.command()(replay)

__all__ = ["app"]
