"""The one exception type moejax raises for bad configuration or bad input."""


class ConfigError(ValueError):
    """A configuration field or input shape is invalid.

    The message is one line that names the field, the value given and what is allowed,
    e.g. ``moe.num_selected_experts=3 must be <= moe.num_experts=2``.
    """


def check(condition: bool, message: str) -> None:
    """Raises ConfigError(message) unless `condition` holds."""
    if not condition:
        raise ConfigError(message)


def check_choice(field: str, value, allowed) -> None:
    """Raises ConfigError unless `value` is one of `allowed`."""
    if value not in allowed:
        raise ConfigError(
            f"{field}={value!r} is not one of {', '.join(repr(a) for a in allowed)}")


def first_line(err: BaseException) -> str:
    """'TypeName: first line of its message' (at most 200 characters of it), for a one-line
    error that names the cause of a library's multi-line exception."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:200]}" if text else type(err).__name__
