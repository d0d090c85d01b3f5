"""Sphinx extension of the dsmlr docs: the command-line reference, and repository links.

Directive ``dsmlr-cli``: the command-line reference, built from the parser.

The reference calls :func:`dsmlr.cli.build_parser`, the function ``dsmlr`` itself runs,
so it cannot drift from the code: one section per subcommand, with its usage line (as
``dsmlr COMMAND --help`` prints it) and a table of its arguments (name, value, default,
help text).  Use it in a MyST page as::

    :::{dsmlr-cli}
    :::

Links from a page to a file of the repository outside ``docs/`` (a benchmark's results
in ``benchmarks/results/``, a source file) work on GitHub as they are; on the site such a
file becomes a download (its copy in the site), not an unknown document.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

#: Defaults that the "default" column leaves blank.
_NO_DEFAULT = (None, argparse.SUPPRESS)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _usage(parser: argparse.ArgumentParser) -> str:
    """The usage line as ``--help`` prints it, at the width of the page (a terminal varies)."""
    formatter = argparse.HelpFormatter(parser.prog, width=72)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def _names(action: argparse.Action) -> str:
    return ", ".join(action.option_strings) or action.metavar or action.dest


def _value(action: argparse.Action) -> str:
    if action.nargs == 0 or not action.option_strings:  # a flag, or a positional's name
        return ""
    if action.choices is not None:
        return " | ".join(str(c) for c in action.choices)
    metavar = action.metavar or action.dest.upper()
    return metavar + (" ..." if action.nargs in ("+", "*") else "")


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    if isinstance(action, argparse._StoreTrueAction):
        return "off"
    if action.nargs == 0 or action.default in _NO_DEFAULT:
        return ""
    return str(action.default)


def _help(action: argparse.Action) -> str:
    """The help text as ``--help`` prints it: ``%(default)s`` filled in, ``%%`` a percent."""
    text = action.help or ""
    text = re.sub(r"%\((\w+)\)s", lambda m: str(getattr(action, m.group(1))), text)
    return text.replace("%%", "%")


def _cell(text: str, literal: bool = False) -> nodes.entry:
    entry = nodes.entry()
    if text:
        entry += nodes.paragraph("", "", nodes.literal(text, text) if literal else nodes.Text(text))
    return entry


def _table(rows: list[tuple[str, str, str, str]]) -> nodes.table:
    headers = ("argument", "value", "default", "meaning")
    widths = (22, 18, 12, 48)
    table = nodes.table(classes=["dsmlr-cli-options"])
    group = nodes.tgroup(cols=len(headers))
    table += group
    for width in widths:
        group += nodes.colspec(colwidth=width)
    head = nodes.thead()
    group += head
    row = nodes.row()
    for header in headers:
        row += _cell(header)
    head += row
    body = nodes.tbody()
    group += body
    for names, value, default, text in rows:
        row = nodes.row()
        row += _cell(names, literal=True)
        row += _cell(value, literal=True)
        row += _cell(default, literal=bool(default) and default not in ("required", "off"))
        row += _cell(text)
        body += row
    return table


def command_rows(parser: argparse.ArgumentParser) -> list[tuple[str, str, str, str]]:
    """One row per argument of ``parser`` (``--help`` left out): names, value, default, help."""
    return [
        (_names(a), _value(a), _default(a), _help(a))
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction)
    ]


class CliReference(SphinxDirective):
    """Every subcommand of ``dsmlr``: a section each, with usage and an argument table."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from dsmlr.cli import build_parser

        parser = build_parser()
        out: list[nodes.Node] = []
        for name, sub in _subcommands(parser).items():
            section = nodes.section(ids=[f"dsmlr-{name}"], names=[f"dsmlr {name}"])
            section += nodes.title("", "", nodes.literal(f"dsmlr {name}", f"dsmlr {name}"))
            section += nodes.paragraph("", sub.description or "")
            usage = _usage(sub)
            section += nodes.literal_block(usage, usage, language="text")
            section += _table(command_rows(sub))
            self.state.document.note_implicit_target(section, section)
            out.append(section)
        return out


def outside_links_to_downloads(app: Sphinx, doctree: nodes.document) -> None:
    """Make each link to a repository file outside the site a download of that file.

    MyST takes a link to a ``.md`` file for a link to a page; one outside ``docs/``
    (``../benchmarks/results/mpi.md``) is no page of the site.  Runs before Sphinx
    collects the downloads of the page.
    """
    env = app.env
    here = Path(env.doc2path(env.docname)).parent
    for node in list(doctree.findall(addnodes.pending_xref)):
        if node.get("refdomain") != "doc" or node.get("reftype") != "myst":
            continue
        target = node["reftarget"]
        if target in env.found_docs:
            continue
        for suffix in app.config.source_suffix:
            path = (Path(env.srcdir) / (target + suffix)).resolve()
            if path.is_file():
                link = addnodes.download_reference(
                    "", "", *node.children, refdoc=env.docname, refdomain=None,
                    reftype="myst", refexplicit=True, reftarget=os.path.relpath(path, here),
                    classes=["xref", "download", "myst"],
                )  # fmt: skip
                node.replace_self(link)
                break


def setup(app: Sphinx) -> dict:
    app.add_directive("dsmlr-cli", CliReference)
    # Before Sphinx's download collector (priority 500) reads the page's downloads.
    app.connect("doctree-read", outside_links_to_downloads, priority=400)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
