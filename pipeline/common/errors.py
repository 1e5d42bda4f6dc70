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


class EnvFileError(ConfigError):
    """A ``.env`` / ``EnvironmentFile=`` file that cannot be read as one. ``str()`` is the
    one line: the file, where (line, byte offset) and why; never a value from it."""

    def __init__(self, path: str, where: str, reason: str) -> None:
        PipelineError.__init__(self, f"bad settings file {path}{':' + where if where else ''}: {reason}")
        self.name, self.value, self.reason = path, "", reason
