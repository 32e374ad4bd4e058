"""The one exception type for errors a user can cause and fix."""


class NasError(Exception):
    """A user-fixable error: bad config, bad genotype, missing dataset, incompatible flags.

    The CLI prints the message on one line without a traceback and exits with status 2. The message
    says what went wrong and what to do about it.
    """


def shorten(value: object, limit: int = 60) -> str:
    """`repr(value)` cut to about `limit` characters, so an error line never echoes a huge value."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}... ({len(text)} characters)"
