"""How a spec problem reaches the user: `SpecError` (one `path: message` line per problem) and
Pydantic's validation errors rewritten into such lines, a bad value echoed at most ECHO_MAX
characters. Shared by the models, the sweep grid and the YAML loader, so every spec error reads alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError

ECHO_MAX = 80  # characters of a bad value an error message repeats


class SpecError(ValueError):
    """A spec problem, one `path: message` line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def echo(value: Any) -> str:
    """At most ECHO_MAX characters of a bad value, for an error message."""
    text = str(value)
    return text if len(text) <= ECHO_MAX else text[: ECHO_MAX - 3] + "..."


def format_errors(err: ValidationError, prefix: str = "") -> list[str]:
    """One `field.path: message` line per pydantic error."""
    lines: list[str] = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        for noise in ("Value error, ", "Assertion failed, "):
            msg = msg.replace(noise, "")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling)"
        elif e["type"] == "literal_error":
            msg = f"{msg}, got {echo(repr(e.get('input')))}"
        elif isinstance(e.get("input"), bool) and e["type"] in ("float_type", "int_type"):
            msg = f"expected a number, not a boolean ({str(e['input']).lower()})"
        elif (
            e["type"] not in ("value_error", "assertion_error", "missing")
            and "got" not in msg
            and not isinstance(e.get("input"), dict)
        ):
            msg = f"{msg}, got {echo(repr(e.get('input')))}"
        if not path:  # model-level validator: the message already names its fields
            lines.extend(f"{prefix}{line}" for line in msg.splitlines())
        else:
            lines.extend(f"{prefix}{path}: {line}" for line in msg.splitlines())
    return lines
