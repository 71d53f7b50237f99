"""`marionette chaos`: the command (placeholder until the harness lands)."""


def chaos() -> None:
    """Run a mixed conversation while killing stages at random; report what was lost."""
    raise NotImplementedError
