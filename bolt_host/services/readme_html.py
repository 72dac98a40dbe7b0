"""Package READMEs as safe HTML: CommonMark (markdown-it-py) then an allow-list sanitizer (nh3).

Real READMEs mix markdown with HTML blocks (centred logos, ``<details>``, badge rows), so the
parser passes raw HTML through and the sanitizer is the one security boundary, as on the npm
and GitHub sites.  What comes out:

* only the tags and attributes in :data:`TAGS` / :data:`ATTRIBUTES`; ``<script>``,
  ``<style>`` and their content are dropped, event handlers and ``style`` never survive;
* links keep an ``href`` only for ``http(s):``, ``mailto:`` and ``#anchor`` URLs (anything
  else, ``javascript:`` and relative paths included, becomes plain text) and open in a new
  tab with ``rel="noopener noreferrer nofollow"``;
* images are never loaded: a markdown image becomes ``[image: alt]`` text and an HTML
  ``<img>`` keeps only its ``alt`` (no ``src``), so a README cannot make the viewer's browser
  fetch anything.
"""

from __future__ import annotations

import functools
import re
from typing import Any

TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "details", "div", "dl", "dt", "em",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "kbd", "li", "ol", "p", "pre", "s",
    "samp", "span", "strong", "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th",
    "thead", "tr", "ul", "var",
}  # fmt: skip
ATTRIBUTES = {
    "a": {"href", "title"},
    "abbr": {"title"},
    "code": {"class"},
    "img": {"alt"},
    "ol": {"start"},
    "span": {"class"},
    "td": {"align"},
    "th": {"align"},
    "div": {"align"},
    "p": {"align"},
    "details": {"open"},
    **{f"h{level}": {"align"} for level in range(1, 7)},  # centred titles are common in READMEs
}
LINK_REL = "noopener noreferrer nofollow"
_SAFE_HREF = re.compile(r"^(?:(?:https?://|mailto:)\S+|#[\w\-.]*)$", re.IGNORECASE)
_SAFE_CLASS = {"code": re.compile(r"^language-[\w+-]+$"), "span": re.compile(r"^md-image$")}


def _keep_attribute(tag: str, attribute: str, value: str) -> str | None:
    if attribute == "href":
        return value if _SAFE_HREF.match(value.strip()) else None
    if attribute == "class":
        pattern = _SAFE_CLASS.get(tag)
        return value if pattern is not None and pattern.match(value) else None
    return value


def _image_as_text(renderer: Any, tokens: Any, index: int, options: Any, env: Any) -> str:
    token = tokens[index]
    alt = renderer.renderInlineAsText(token.children or [], options, env)
    label = f"[image: {alt}]" if alt else "[image]"
    from markdown_it.common.utils import escapeHtml  # loaded already: this runs inside its renderer

    return f'<span class="md-image">{escapeHtml(label)}</span>'


@functools.cache
def _renderer() -> tuple[Any, Any]:
    """The parser and the cleaner, built at the first README (markdown-it and nh3 cost memory)."""
    import nh3
    from markdown_it import MarkdownIt

    parser = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    parser.add_render_rule("image", _image_as_text)
    cleaner = nh3.Cleaner(
        tags=TAGS,
        attributes=ATTRIBUTES,
        attribute_filter=_keep_attribute,
        url_schemes={"http", "https", "mailto"},
        link_rel=LINK_REL,
        set_tag_attribute_values={"a": {"target": "_blank"}},
        strip_comments=True,
    )
    return parser, cleaner


def render_readme(markdown: str) -> str:
    """``markdown`` (a README) as sanitized HTML, safe to put into a page with ``innerHTML``."""
    parser, cleaner = _renderer()
    return str(cleaner.clean(parser.render(str(markdown))))
