"""`N_`: marks an English sentence of the library that the web service shows, so that
`pybabel extract` (babel.cfg) puts it in the catalogues; it returns the sentence unchanged.

The library and the CLI speak English; `serve` translates a marked constant where it shows
it, with `serve.i18n._(CONSTANT)`. See README "Languages".
"""

from __future__ import annotations


def N_(message: str) -> str:  # noqa: N802 (gettext's conventional name)
    return message
