"""`python -m services ...` is `marionette ...`.

`marionette run STAGE` (how `marionette up` starts every stage) skips loading the other
commands: a restarted stage is back sooner.
"""

import sys

if sys.argv[1:2] == ["run"]:
    import typer

    from services.cli.stages import run

    del sys.argv[1]
    typer.run(run)
else:
    from services.cli.app import app

    app(prog_name="marionette")
