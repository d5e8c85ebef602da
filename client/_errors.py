"""The client's errors, and the one place where transport errors become them."""

from __future__ import annotations

from bonefrac.errors import BonefracError


class ClientError(BonefracError):
    """A request to the server failed."""


class ServerUnavailableError(ClientError):
    """The server could not be reached, or is not ready. Retrying later may succeed."""


class ServerOverloadedError(ServerUnavailableError):
    """The server's queue for the model is full; it rejected the request at once. Retry later."""


class InvalidInputError(ClientError):
    """The server refused the input (e.g. not an image). Retrying the same input will not help."""


class RequestTimeoutError(ClientError):
    """The request did not finish within its deadline."""


class ModelNotFoundError(ClientError):
    """The server does not have (or has not loaded) the requested model."""


def convert_error(exc: Exception, *, url: str, model: str) -> ClientError:
    """Turn a tritonclient / gRPC exception into a :class:`ClientError` with a clear message."""
    status = ""
    message = str(exc)
    status_fn = getattr(exc, "status", None)
    if callable(status_fn):
        status = str(status_fn() or "")
    msg_fn = getattr(exc, "message", None)
    if callable(msg_fn):
        message = str(msg_fn() or message)
    text = f"{status} {message}"
    if "queue size" in text.lower():
        return ServerOverloadedError(
            f"Triton server at {url} is overloaded: the queue of model '{model}' is full "
            f"({message.strip()}); retry with backoff or add capacity"
        )
    if "UNAVAILABLE" in text or "failed to connect" in text.lower() or "Socket closed" in text:
        return ServerUnavailableError(
            f"Triton server at {url} is unavailable ({message.strip()}); check that it is running "
            "('bonefrac serve') and that the address is right"
        )
    if "DEADLINE_EXCEEDED" in text or "Deadline Exceeded" in text:
        return RequestTimeoutError(f"request to model '{model}' at {url} timed out: {message}")
    if "INVALID_ARG" in text:
        return InvalidInputError(message.strip())
    if "NOT_FOUND" in text or "unknown model" in text or "is not found" in text:
        return ModelNotFoundError(f"model '{model}' is not available at {url} ({message.strip()})")
    return ClientError(f"request to model '{model}' at {url} failed: {text.strip()}")
