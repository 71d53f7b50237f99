from services.cli.app import app

app(prog_name="marionette")
