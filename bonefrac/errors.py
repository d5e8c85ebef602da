"""bonefrac's exception family. Subpackages raise these (or subclasses) with actionable messages."""


class BonefracError(Exception):
    """Base class of every error bonefrac raises on purpose."""


class ModelRepositoryError(BonefracError):
    """A model repository, model config or model artifact is missing or malformed."""


class ServerError(BonefracError):
    """tritonserver could not be found, started or stopped."""
