"""User-facing errors. Each message says what is wrong and what to do; the CLI prints it on one line
(exit code 2) and the app shows it, with no traceback."""


class NSCVFError(Exception):
    """Base class of every error a user can cause and fix."""


class InputError(NSCVFError):
    """A bad image, file, name or setting."""


class ModelLoadError(NSCVFError):
    """A model path or id that cannot be loaded."""


class Cancelled(NSCVFError):
    """A long job was cancelled through its progress callback."""


class ResourceError(NSCVFError):
    """A request that does not fit the machine (memory); the message names what to lower."""
