"""Decoding settings: one type and one set of limits for the library, the CLI, the JSON API and the page.

    settings = parse_settings("beam", "3", None, longest=23)   # strings from a form are fine
    settings.method, settings.beam_width, settings.max_length   # 'beam', 3, 23

Everything that takes settings from a person goes through :func:`parse_settings`, so every
door accepts and refuses the same values with the same message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

METHODS = ("greedy", "beam", "consensus", "guided")
MAX_BEAM_WIDTH = 10  # wider beams cost time and, on these models, do not score better
DEFAULT_BEAM_WIDTH = 3
# A plain whole number in ASCII digits ("3", " 4 ", "3.0"); not "３", "1e1", "+-2" or True.
_WHOLE_NUMBER = re.compile(r"\s*\+?[0-9]+(\.0*)?\s*")


class SettingsError(ValueError):
    """A decoding setting (method, beam width, length) is not acceptable; the message says why."""


@dataclass(frozen=True)
class DecodeSettings:
    method: str = "greedy"
    beam_width: int = DEFAULT_BEAM_WIDTH
    max_length: int | None = None  # longest caption in words; None: the model's limit


def whole_number(value, name: str, top: int) -> int:
    """``value`` (an int, an integral float, or a form string) as an int in 1..top, else SettingsError."""
    problem = SettingsError(f"{name} must be a whole number from 1 to {top}, not {value!r}")
    if isinstance(value, bool):
        raise problem
    if isinstance(value, str):
        if not _WHOLE_NUMBER.fullmatch(value):
            raise problem
        value = float(value)
    if not isinstance(value, (int, float)) or not float(value).is_integer() or not 1 <= value <= top:
        raise problem
    return int(value)


def parse_settings(method="greedy", beam_width=DEFAULT_BEAM_WIDTH, max_length=None,
                   longest: int | None = None) -> DecodeSettings:
    """Validate settings from a person. ``longest`` is the models' caption limit in words; an
    absent ``max_length`` (None or "") means that limit."""
    method = str(method or "").strip().lower()
    if method not in METHODS:
        raise SettingsError(f"method must be one of {', '.join(repr(m) for m in METHODS)}, not {method!r}")
    width = whole_number(beam_width, "beam_width", MAX_BEAM_WIDTH)
    if max_length is None or max_length == "":
        return DecodeSettings(method, width, longest)
    return DecodeSettings(method, width, whole_number(max_length, "max_length", longest or 10**6))
