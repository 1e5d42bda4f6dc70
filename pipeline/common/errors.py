"""Errors shared by every process."""


class PipelineError(Exception):
    """Base class of the pipeline's own errors."""


class ConfigError(PipelineError):
    """A setting has a bad value. ``str()`` is the one line printed before exit 2."""

    def __init__(self, name: str, value: str, reason: str, secret: bool = False) -> None:
        self.name = name
        self.value = "********" if secret else value
        self.reason = reason
        super().__init__(f"bad setting {name}={self.value!r}: {reason}")
