"""Turn a failure inside a model you brought (a framework LLM, an API client) into a
``GeneratorError`` that names the model and, for OpenAI-client errors, the endpoint."""

from __future__ import annotations

from shared_core.errors import GeneratorError


def _endpoint(exc: BaseException) -> str | None:
    """The URL an ``openai`` client error was about, if the error is one."""
    try:
        import openai
    except ImportError:  # pragma: no cover - openai is an extra
        return None
    if isinstance(exc, openai.APIStatusError):
        return str(exc.response.request.url)
    if isinstance(exc, openai.APIConnectionError | openai.APIResponseValidationError):
        return str(exc.request.url)
    return None


def generator_failure(exc: BaseException, model: str) -> GeneratorError:
    """A ``GeneratorError`` for ``exc`` raised by ``model`` (a description of the model)."""
    if isinstance(exc, GeneratorError):
        return exc
    cause = exc.__cause__ or exc.__context__
    where = _endpoint(exc)
    at = f" at {where}" if where else ""
    detail = f"{type(exc).__name__}: {exc}"
    if cause is not None and str(cause) and str(cause) not in detail:
        detail += f" ({type(cause).__name__}: {cause})"
    return GeneratorError(f"the model {model}{at} failed: {detail}")


__all__ = ["generator_failure"]
