"""Plain prose from MediaWiki markup: a small, dependency-free wikitext stripper.

Good enough for language-model text (it keeps paragraphs, headings and link labels, and drops
templates, tables, references, files, categories and the trailing link sections); not a
MediaWiki renderer.
"""

from __future__ import annotations

import html
import re

# Trailing sections that are lists of links or citations, not prose.
_TAIL_SECTIONS = ("see also", "references", "external links", "further reading", "notes",
                  "bibliography", "sources", "footnotes", "notes and references")
# Link namespaces whose target is not text in the article.
_DROP_LINK_PREFIXES = ("file:", "image:", "category:", "media:", "wikt:", "wiktionary:")

_COMMENT = re.compile(r"<!--.*?-->", re.S)
_TEMPLATE_BRACES = re.compile(r"\{\{|\}\}")
_TABLE = re.compile(r"\{\|(?:(?!\{\|)[\s\S])*?\|\}")
_REF = re.compile(r"<ref[^>/]*/>|<ref[^>]*>.*?</ref>", re.S | re.I)
_DROP_ELEMENTS = re.compile(
    r"<(math|gallery|timeline|imagemap|score|syntaxhighlight|source|pre|chem)\b[^>]*>.*?</\1>",
    re.S | re.I)
_TAG = re.compile(r"</?[a-zA-Z][^>]*>")
_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
_EXTERNAL_LINK = re.compile(r"\[(?:https?:|ftp:|//)[^\s\]]*\s*([^\]]*)\]")
_EMPHASIS = re.compile(r"'{2,}")
_HEADING = re.compile(r"^(={1,6})\s*(.*?)\s*\1\s*$")
_LIST_MARKER = re.compile(r"^[*#:;]+\s*")
_INTERLANGUAGE = re.compile(r"^[a-z]{2,3}(-[a-z]+)?:")


def _replace_until_stable(pattern: re.Pattern, repl, text: str) -> str:
    while True:
        new = pattern.sub(repl, text)
        if new == text:
            return text
        text = new


def _remove_templates(text: str) -> str:
    """Drops every {{...}} template, nested ones included, by matching the braces (text after
    an unclosed template is dropped too)."""
    out, depth, last = [], 0, 0
    for match in _TEMPLATE_BRACES.finditer(text):
        if match.group() == "{{":
            if depth == 0:
                out.append(text[last:match.start()])
            depth += 1
        elif depth > 0:
            depth -= 1
            if depth == 0:
                last = match.end()
    if depth == 0:
        out.append(text[last:])
    return "".join(out)


def _link_label(match: re.Match) -> str:
    target, _, label = match.group(1).partition("|")
    lowered = target.strip().lower()
    if lowered.startswith(_DROP_LINK_PREFIXES) or _INTERLANGUAGE.match(lowered):
        return ""
    label = label.rpartition("|")[2] if label else target
    return label.lstrip(":")


def strip_wikitext(text: str) -> str:
    """The prose of one article's wikitext: paragraphs separated by blank lines."""
    text = html.unescape(text)
    text = _COMMENT.sub("", text)
    text = _REF.sub("", text)
    text = _DROP_ELEMENTS.sub("", text)
    text = _remove_templates(text)
    text = _replace_until_stable(_TABLE, "", text)
    text = _replace_until_stable(_LINK, _link_label, text)
    text = _EXTERNAL_LINK.sub(r"\1", text)
    text = _TAG.sub("", text)
    text = _EMPHASIS.sub("", text)
    text = html.unescape(text)                       # entities written as &amp;nbsp; etc.
    paragraphs, lines = [], []
    for raw in text.split("\n"):
        line = raw.strip()
        heading = _HEADING.match(line)
        if heading:
            if heading.group(2).strip().lower() in _TAIL_SECTIONS:
                break
            line = heading.group(2).strip()
        line = _LIST_MARKER.sub("", line)
        if not line or line[0] in "|!{}[" or line.startswith("__"):
            if lines:
                paragraphs.append(" ".join(lines))
                lines = []
            continue
        if heading:                                  # a heading is a paragraph of its own
            if lines:
                paragraphs.append(" ".join(lines))
            paragraphs.append(line)
            lines = []
        else:
            lines.append(line)
    if lines:
        paragraphs.append(" ".join(lines))
    return "\n\n".join(re.sub(r"[ \t]{2,}", " ", p) for p in paragraphs)
