"""README rendering on the host: CommonMark through markdown-it-py, sanitized by nh3.

The excerpts are written for these tests in the style of real package READMEs (express,
http-server, chalk, commander, lodash): the constructs the old hand-written renderer got wrong.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bolt_host import errors
from bolt_host.services.readme_html import ATTRIBUTES, TAGS, render_readme
from bolt_host.testing import RunningHost, running_host


class Tree(HTMLParser):
    """Every start tag with its attributes, and the text, as a browser's parser would see them."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def names(self) -> list[str]:
        return [tag for tag, _ in self.tags]

    def find(self, name: str) -> list[dict[str, str | None]]:
        return [attrs for tag, attrs in self.tags if tag == name]


EXPRESS_LIKE = """\
[![Express Logo](https://i.cloudup.com/zfY6lL7eFa-3000x3000.png)](https://expressjs.com/)

Fast, unopinionated, minimalist web framework for [Node.js][node].

[![NPM Version][npm-version-image]][npm-url]

[node]: https://nodejs.org
[npm-version-image]: https://badgen.net/npm/v/express
[npm-url]: https://npmjs.org/package/express
"""

HTTP_SERVER_LIKE = """\
http-server: a simple static HTTP server
========================================

Installation
------------

1. Globally via `npm`
   - `npm install --global http-server`
   - or with a prefix:
     1. `npm config set prefix ~/.local`
     2. `npm install -g http-server`
2. Running on-demand: `npx http-server [path] [options]`
"""

CHALK_LIKE = """\
<h1 align="center">
	<br>
	<img width="320" src="media/logo.svg" alt="Chalk">
	<br>
</h1>

> Terminal string styling done right

<details>
<summary>Why not colors.js?</summary>

Because **chalk** has no dependencies.

</details>
"""

COMMANDER_LIKE = """\
Commander.js
============

Read this in other languages: English | [简体中文](./Readme_zh-CN.md)

| Option | Description |
| :----- | ----------: |
| `-d`   | debug       |

```js
program.option('-p, --pizza-type <type>', 'flavour of pizza');
```
"""

LODASH_LIKE = """\
# lodash v4.17.21

The [Lodash](https://lodash.com/) library exported as [Node.js](https://nodejs.org/) modules.

Questions? Mail <support@lodash.example> or see <https://lodash.com/docs>.

    $ npm i --save lodash
"""


def test_nested_lists_and_setext_headings() -> None:
    html = render_readme(HTTP_SERVER_LIKE)
    tree = Tree(html)
    assert tree.names()[:2] == ["h1", "h2"]  # both setext heading levels
    assert "<h1>http-server: a simple static HTTP server</h1>" in html
    # ol > li > ul > li > ol: three levels, as the indentation says
    assert (
        "<ol>\n<li>Globally via <code>npm</code>\n<ul>\n<li><code>npm install --global http-server</code></li>" in html
    )
    assert "<li>or with a prefix:\n<ol>\n<li><code>npm config set prefix ~/.local</code></li>" in html
    assert tree.names().count("ol") == 2 and tree.names().count("ul") == 1


def test_reference_links_and_badges() -> None:
    tree = Tree(render_readme(EXPRESS_LIKE))
    hrefs = [attrs["href"] for attrs in tree.find("a")]
    assert hrefs == ["https://expressjs.com/", "https://nodejs.org", "https://npmjs.org/package/express"]
    for attrs in tree.find("a"):
        assert attrs["rel"] == "noopener noreferrer nofollow" and attrs["target"] == "_blank"
    # Badges and logos are never loaded: their alt text is shown instead.
    assert tree.find("img") == []
    assert [attrs["class"] for attrs in tree.find("span")] == ["md-image", "md-image"]
    text = "".join(tree.text)
    assert "[image: Express Logo]" in text and "[image: NPM Version]" in text
    assert "[node]:" not in text  # definitions are consumed, not shown


def test_html_blocks_render_with_only_allowed_parts() -> None:
    html = render_readme(CHALK_LIKE)
    tree = Tree(html)
    assert tree.find("h1") == [{"align": "center"}]
    assert tree.find("img") == [{"alt": "Chalk"}]  # no src: nothing is fetched
    assert "details" in tree.names() and "summary" in tree.names()
    assert "<strong>chalk</strong>" in html  # markdown inside the HTML block still renders
    assert tree.names().count("blockquote") == 1


def test_tables_code_and_relative_links() -> None:
    html = render_readme(COMMANDER_LIKE)
    tree = Tree(html)
    assert tree.names()[0] == "h1"
    assert [tag for tag in tree.names() if tag in {"table", "th", "td"}] == ["table", "th", "th", "td", "td"]
    assert tree.find("code")[-1] == {"class": "language-js"}
    assert "&lt;type&gt;" in html  # code is escaped
    # A relative link is kept as text (the rule: only http(s), mailto and #anchors are links).
    assert [attrs.get("href") for attrs in tree.find("a")] == [None]
    assert "简体中文" in "".join(tree.text)


def test_autolinks_mail_and_indented_code() -> None:
    tree = Tree(render_readme(LODASH_LIKE))
    hrefs = [attrs["href"] for attrs in tree.find("a")]
    assert hrefs == [
        "https://lodash.com/",
        "https://nodejs.org/",
        "mailto:support@lodash.example",
        "https://lodash.com/docs",
    ]
    assert "pre" in tree.names() and "$ npm i --save lodash" in "".join(tree.text)


HOSTILE = [
    "<script>alert('x')</script>",
    "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
    '<img src=x onerror="alert(1)">',
    '<a href="javascript:alert(1)">js</a>',
    "[js](javascript:alert(1))",
    "[js](JaVaScRiPt:alert(1))",
    "[js](  javascript:alert(1))",
    "[data](data:text/html;base64,PHNjcmlwdD4=)",
    '<a href="vbscript:msgbox(1)">vb</a>',
    '<div onclick="alert(1)" onmouseover="alert(2)" style="position:fixed">x</div>',
    '<svg onload="alert(1)"><circle/></svg>',
    '<iframe src="https://evil.example"></iframe>',
    '<form action="https://evil.example"><input name="p"><button>go</button></form>',
    "<style>body{display:none}</style>",
    '<object data="x.swf"></object><embed src="x.swf">',
    '<details open ontoggle="alert(1)"><summary>s</summary></details>',
    '<a href="https://ok.example" onclick="alert(1)" target="_self">ok</a>',
    '<math><mi xlink:href="javascript:alert(1)">x</mi></math>',
    "<!-- <script>alert(1)</script> -->",
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>"></noscript>',
]


@pytest.mark.parametrize("source", HOSTILE)
def test_hostile_readmes_come_out_inert(source: str) -> None:
    html = render_readme(f"# t\n\n{source}\n\nafter\n")
    tree = Tree(html)
    assert set(tree.names()) <= TAGS, html
    allowed = set().union(*ATTRIBUTES.values()) | {"rel", "target"}
    for tag, attrs in tree.tags:
        assert set(attrs) <= allowed, html
        assert not any(name.startswith("on") for name in attrs), html
        href = attrs.get("href")
        assert href is None or href.startswith(("https://", "http://", "mailto:", "#")), html
        if tag == "a":
            assert attrs["target"] == "_blank" and attrs["rel"] == "noopener noreferrer nofollow"
        if tag == "img":
            assert set(attrs) <= {"alt"}
    assert 'href="javascript' not in html.lower() and "<script" not in html.lower(), html
    assert "<p>after</p>" in html  # the rest of the README still renders


def test_script_content_is_dropped_not_shown() -> None:
    html = render_readme("<script>alert('x')</script>\n\nok")
    assert "alert" not in html and "<p>ok</p>" in html


# ---------------------------------------------------------------- served over the API


@pytest.fixture
async def repo_host(tmp_path: Path) -> AsyncIterator[RunningHost]:
    repo = tmp_path / "repo"
    app = repo / "chalkish"
    app.mkdir(parents=True)
    (app / "package.json").write_text(json.dumps({"name": "chalkish", "version": "1.0.0", "keywords": ["bolt-app"]}))
    (app / "README.md").write_text(CHALK_LIKE + "\n[bad](javascript:alert(1))\n")
    async with running_host(tmp_path / "data", local_repo=repo) as bolt:
        yield bolt


async def test_readmes_are_served_as_markdown_or_sanitized_html(repo_host: RunningHost) -> None:
    admin = repo_host.admin
    markdown = await admin.post("/api/apps/local-readme", json={"path": "chalkish"})
    assert markdown.json()["body"] == CHALK_LIKE + "\n[bad](javascript:alert(1))\n"  # Bolt's answer is unchanged
    html = (await admin.post("/api/apps/local-readme", json={"path": "chalkish", "format": "html"})).json()["body"]
    assert html == render_readme(markdown.json()["body"])
    assert '<img alt="Chalk">' in html and 'href="javascript' not in html
    assert "<p>[bad](javascript:alert(1))</p>" in html  # a refused link stays visible as text
    wrong = await admin.post("/api/apps/local-readme", json={"path": "chalkish", "format": "pdf"})
    assert wrong.status_code == 400 and wrong.json()["code"] == errors.BAD_REQUEST
    await repo_host.host.catalog.refresh()
    preview = (await admin.get("/api/catalog/package", params={"name": "chalkish"})).json()["body"]
    assert preview["readme"] == markdown.json()["body"] and preview["readmeHtml"] == html


@pytest.mark.timeout(180)
def test_market_release_notes_come_with_sanitized_html(tmp_path: Path) -> None:
    import shutil

    from tests.registry_server import RegistryServer
    from tests.test_market_support import REPO, market_host

    app = tmp_path / "env-echo"
    shutil.copytree(REPO / "env-echo", app)
    manifest = json.loads((app / "package.json").read_text())
    notes = "**Faster** starts.\n\n<script>alert(1)</script>\n\n- [js](javascript:alert(1))\n"
    manifest["bolt"]["releaseNotes"] = notes
    (app / "package.json").write_text(json.dumps(manifest))
    with RegistryServer() as server:
        server.publish_dir(app)
        with market_host(tmp_path / "market") as market:
            added = market.admin.post(
                "/settings/market-source", json={"id": "reg", "name": "R", "type": "remote", "base_url": server.url}
            )
            assert added.status_code == 200, added.text
            history = market.admin.post("/apps/version-history", json={"appName": "env-echo", "source": "reg"})
            row = history.json()["data"]["data"][0]
    assert row["upgradeDescription"] == manifest["bolt"]["releaseNotes"]  # the markdown, as before
    assert row["upgradeDescriptionHtml"] == render_readme(manifest["bolt"]["releaseNotes"])
    assert "<strong>Faster</strong>" in row["upgradeDescriptionHtml"] and "<script" not in row["upgradeDescriptionHtml"]
