"""HTML pages from the Jinja2 templates in ``musicpipe/templates/``: one environment, autoescaped.

``base.html.j2`` holds what every page shares (head, CSS, heading, the "Written by" line);
``report.html.j2`` (:func:`musicpipe.report.render_html`) and ``samples.html.j2``
(:func:`training_checks.fixed_seed_sampler.render_index`) extend it. Every ``{{ value }}`` is escaped
with :func:`html.escape` (``quote=True``), so a genre, file name or override with ``<``, ``&`` or quotes
is shown as text and cannot add markup; a value marked safe (``markupsafe.Markup``, a macro's output) is
kept as it is.

Example:
    >>> page = render("samples.html.j2", sig="<b>", facts=[("genre", "<script>alert(1)</script>")], rows=[],
    ...               columns=[], has_oracle=False, spec_range="-100 to 0", peak=0.9)
    >>> "<script>" in page, "&lt;script&gt;alert(1)&lt;/script&gt;" in page, "XP &lt;b&gt;</title>" in page
    (False, True, True)
"""

from __future__ import annotations

import functools
import html
import typing as tp

import jinja2
import markupsafe

TEMPLATE_PACKAGE = ("musicpipe", "templates")


def _escape(value: tp.Any) -> tp.Any:
    """Escape like ``html.escape(str(value), quote=True)`` (``&quot;``, ``&#x27;``), leaving safe markup alone.

    Jinja2's own escaping writes ``&#34;`` and ``&#39;`` for quotes: the same text in a browser, but the
    pages were written with :func:`html.escape` before they came from templates, and stay byte-identical.

    Example:
        >>> str(_escape('a "b" & <c>')), str(_escape(markupsafe.Markup("<i>kept</i>")))
        ('a &quot;b&quot; &amp; &lt;c&gt;', '<i>kept</i>')
    """
    if hasattr(value, "__html__"):
        return value
    return markupsafe.Markup(html.escape(str(value), quote=True))


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The Jinja2 environment of musicpipe's pages (templates from the package, escaped, strict)."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader(*TEMPLATE_PACKAGE),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"), default=True),
        finalize=_escape,  # runs on every {{ value }} before autoescaping, which then leaves the Markup alone
        undefined=jinja2.StrictUndefined,  # a misspelt name is an error, not an empty string
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )


def render(template: str, /, **context: tp.Any) -> str:
    """The text of ``musicpipe/templates/<template>`` rendered with ``context``.

    Example:
        >>> render("base.html.j2").startswith('<!DOCTYPE html>\\n<html lang="en">')
        True
    """
    return environment().get_template(template).render(**context)
