"""A page's markup drawn once per process and filled in per request.

Why: the login page is some 10 kB of markup that is the same for every sign-in of one
language, service, set of claims and purpose, except for a handful of values (the
transaction id, the confirmation code, form tokens, URLs that carry the id, the passkey
challenge). Rendering it with Jinja (some 35 gettext calls, 8 ``url_for``, the language
switcher, claim and category labels) was two thirds of ``GET /login``'s CPU.

So the template is rendered once with a *marker* in place of each per-request value; the
markup is split at the markers and kept. A request joins the pieces with its own values,
escaped exactly as Jinja's autoescape does (``markupsafe.escape``: a ``Markup`` value, such
as :func:`tojson`'s, goes in as it is).

What keeps a kept page right:

- The key is everything else the template reads: the page's *inputs* (plain values, not
  objects: a client's display name and category rather than the client, so a renamed or
  recategorised client gets a new key at once and its old page can never be served), the
  language and the script root. Each app owns its cache.
- A marker can only be printed. Testing one (``{% if %}``) or making it a string any other
  way (a filter, ``url_for``) raises, so a template in which a per-request value would shape
  the markup fails in the tests instead of serving one request's shape to all.
- Markers carry a random nonce drawn for each drawing, so text an RP supplies (a client
  name, a purpose) cannot forge one.
- The cache is an LRU of ``MAX_SHAPES`` pages: an RP that sends a new ``purpose`` each time
  only evicts, it cannot grow memory.

The language switcher (``_language.html``, in every page) carries the current URL, so its
links are per-request values too: the drawing replaces ``switch_locale_url`` with markers.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app, render_template, request
from jinja2.nodes import EvalContext
from markupsafe import Markup, escape

from idp.web import i18n

MAX_SHAPES = 256  # pages of about 10 kB each
EXTENSION = "idp.page_cache"
_LANGUAGE = "switch_locale_url:"  # marker names of the language switcher's links


class _Marker:
    """Stands for a per-request value while a page is drawn."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __html__(self) -> str:
        return self.text

    def __bool__(self) -> bool:
        raise TypeError("a per-request value of a cached page may only be printed, not tested")

    def __str__(self) -> str:
        raise TypeError("a per-request value of a cached page may only be printed as it is")


@dataclass(frozen=True)
class _Shape:
    texts: tuple[str, ...]  # the markup between the values: one more than names
    names: tuple[str, ...]  # the value printed after each text but the last

    def fill(self, values: Mapping[str, Any]) -> str:
        parts = [self.texts[0]]
        for name, text in zip(self.names, self.texts[1:]):
            value = i18n.switch_locale_url(name.removeprefix(_LANGUAGE)) if name.startswith(_LANGUAGE) \
                else values[name]
            parts.append(escape(value))
            parts.append(text)
        return "".join(parts)


class PageCache:
    """The drawn pages of one app, least recently used dropped first."""

    def __init__(self, size: int = MAX_SHAPES) -> None:
        self._size = size
        self._shapes: OrderedDict[Hashable, _Shape] = OrderedDict()
        self._lock = threading.Lock()

    def render(self, template: str, inputs: Mapping[str, Hashable], values: Mapping[str, Any]) -> str:
        """``render_template(template, **inputs, **values)``, the same bytes; ``inputs`` shape
        the markup and key it, ``values`` are only printed."""
        key = (template, i18n.current_locale(), request.script_root, tuple(sorted(inputs.items())))
        with self._lock:
            shape = self._shapes.get(key)
            if shape is not None:
                self._shapes.move_to_end(key)
        if shape is None:
            shape = _draw(template, inputs, values.keys())
            with self._lock:
                self._shapes[key] = shape
                while len(self._shapes) > self._size:
                    self._shapes.popitem(last=False)
        return shape.fill(values)

    def __len__(self) -> int:
        return len(self._shapes)


def _draw(template: str, inputs: Mapping[str, Any], names: Any) -> _Shape:
    nonce = secrets.token_hex(16)

    def marker(name: str) -> _Marker:
        return _Marker(f"\x00{nonce}:{name}\x00")

    html = render_template(template, **inputs, **{name: marker(name) for name in names},
                           switch_locale_url=lambda code: marker(_LANGUAGE + code))
    pieces = re.split(f"\x00{nonce}:([^\x00]+)\x00", html)
    return _Shape(texts=tuple(pieces[0::2]), names=tuple(pieces[1::2]))


def render(template: str, inputs: Mapping[str, Hashable], values: Mapping[str, Any]) -> str:
    """Render through the current app's cache (see :meth:`PageCache.render`)."""
    cache: PageCache = current_app.extensions[EXTENSION]
    return cache.render(template, inputs, values)


def tojson(value: Any) -> Markup:
    """``value|tojson`` as the app's templates print it (JSON safe inside a ``<script>``
    element: ``<``, ``>``, ``&`` and ``'`` escaped), for a value a cached page prints."""
    environment = current_app.jinja_env
    return environment.filters["tojson"](EvalContext(environment), value)


def init_app(app: Flask) -> None:
    app.extensions[EXTENSION] = PageCache()
