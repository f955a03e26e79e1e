"""What the pages share about where they are shown — JupyterLab, Voila, a saved notebook's viewer: a panel that
reads as a sentence where widgets do not show, HTML whose links to other notebooks keep the work on screen, and
the words that depend on there being cells to run."""

from __future__ import annotations

import html
import os
import re
from functools import partial

import ipywidgets as W

LINK_STYLE = "color:#1565c0;text-decoration:underline"  # JupyterLab and Voila draw plain links as plain text


def in_voila() -> bool:
    """Whether this kernel serves a Voila page: no cells, no code (Voila names itself in its kernels' CGI
    variables)."""
    return os.environ.get("SERVER_SOFTWARE", "").startswith("voila/") or "VOILA_BASE_URL" in os.environ


def run_again(goal: str) -> str:
    """How to ``goal`` ("use it") once a choice above changed: run the cells below — on a Voila page, which has no
    cells, reload it (it opens on the choice just made)."""
    return f"Reload the page to {goal}." if in_voila() else f"Run the cells below to {goal}."


RUN_BELOW_HINT = "Having chosen, run the cells below (<i>Run ▸ Run All Cells</i>): each reads the choice when it runs."


def notebook_hint(text: str) -> list[W.HTML]:
    """``text`` (HTML that tells the reader to run cells) as a widget to show where there are cells; nothing on a
    Voila page."""
    return [] if in_voila() else [W.HTML(text)]


def say_in_notebook(text: str) -> None:
    """Print ``text``, which tells the reader to click or run a cell, only where there are cells (not in Voila)."""
    if not in_voila():
        print(text)


# What the core's messages tell a command-line user to pass, said as the converter widget's controls; "{overwrite}"
# is the checkbox that replaces a folder (its label differs between the converter and 05's epochs).
WIDGET_TERMS = (
    (r"\bpass --no-strict\b", 'tick "Drop unused source keys" in the converter'),
    (r"\(--no-strict\)", '("Drop unused source keys" ticked)'),
    (
        r"\bpass (--(?:vision|text)-heads \d+) to force it\.",
        r"the converter has no head-count field: to force it, run chclip-convert convert \1.",
    ),
    (r"\bpass --(vision|text)-heads\b", r"give a config.json with the \1 head count in the converter's Config field"),
    (
        r"\bgive the head count with --(vision|text)-heads\b",
        r"give a config.json with the \1 head count (Config field)",
    ),
    (r"\bpass --overwrite \(overwrite=True\)", 'tick "{overwrite}"'),
    (r"\bpass --keep-failed \(keep_failed=True\)", 'tick "Keep files that fail their check"'),
    (r"\bpass --vocab\b", "give it in the converter's Vocabulary field"),
    (r"\(--vocab\)", "(the converter's Vocabulary field)"),
    (r"\bdrop --config\b", "clear the Config field"),
    (r"\(chclip-convert --report\)", "(which 02_inspect_keys.ipynb shows)"),
)


def in_widget_terms(text: str, *, overwrite: str = "Overwrite") -> str:
    """``text`` (a message of the core's, which names command-line options) with each option it tells the user to
    pass said as the widget control that does the same (:data:`WIDGET_TERMS`; ``overwrite`` the label of the
    checkbox that replaces a folder). A sentence that began with "Pass" begins with a capital still."""
    for pattern, replacement in WIDGET_TERMS:
        text = re.sub(pattern, partial(_said_as, replacement.replace("{overwrite}", overwrite)), text, flags=re.I)
    return text


def _said_as(replacement: str, match: re.Match) -> str:
    """``replacement`` for ``match``, with its first letter a capital where the match's was."""
    said = match.expand(replacement)
    return said[:1].upper() + said[1:] if match.group(0)[:1].isupper() else said


def nothing_found(what: str, text: str, total: int) -> str:
    """The count line of a search that found nothing, as HTML: ``no key matches resblocks.99 (0 of 399 keys)``;
    with no name text (another filter found nothing), only the count."""
    count = f"<b>0</b> of {total} {what}s"
    return f"no {what} matches <code>{html.escape(text.strip())}</code> ({count})" if text.strip() else count


def wrapping_layout() -> W.Layout:
    """A row's layout whose widgets go on to the next line where the panel is too narrow for them (two notebooks
    side by side on a laptop), instead of being cut off at its edge."""
    return W.Layout(flex_flow="row wrap")


def wrapping_row(children: list) -> W.HBox:
    """Widgets side by side, on as many lines as the panel's width needs (:func:`wrapping_layout`)."""
    return W.HBox(children, layout=wrapping_layout())


class Panel(W.VBox):
    """A ``VBox`` whose plain-text form is a sentence: what a notebook opened without running it shows in place
    of the widgets (JupyterLab, nbviewer), and what its stored output holds — not a dump of the children's state,
    which names one machine's paths."""

    def __init__(self, children=(), *, name: str, **kwargs) -> None:
        super().__init__(children, **kwargs)
        self._name = name

    def __repr__(self) -> str:
        return f"{self._name} (run this cell to show it)"


class LinkedHTML:
    """HTML, set through :attr:`value` like ``W.HTML``'s, shown by the notebook's own renderer (an ``Output``
    widget holding it as display data), so that JupyterLab opens its relative links to notebooks in a tab beside
    the current one, as it does a Markdown cell's, instead of loading the page again. Where no such handler
    exists (Voila), links with ``target="_blank"`` open in a new browser tab and the page stays as it is."""

    def __init__(self, value: str = "") -> None:
        self.output = W.Output()
        self._value = ""
        self.value = value

    @property
    def value(self) -> str:
        return self._value

    @value.setter
    def value(self, text: str) -> None:
        # Set as state, not with ``with output:``, which captures only the main thread's messages.
        self._value = text
        bundle = {"text/html": text, "text/plain": html.unescape(_plain(text))}
        self.output.outputs = ({"output_type": "display_data", "data": bundle, "metadata": {}},) if text else ()

    @property
    def widget(self) -> W.Output:
        return self.output


def notebook_link(name: str) -> str:
    """An ``<a>`` to notebook ``name`` beside this one, which opens it without leaving the page (see
    :class:`LinkedHTML`, the widget to show it in)."""
    escaped = html.escape(name)
    return f'<a href="{escaped}" target="_blank" rel="noopener" style="{LINK_STYLE}">{escaped}</a>'


def _plain(text: str) -> str:
    """``text`` without its tags (the plain-text form of the HTML, for viewers that show no HTML)."""
    return re.sub(r"<[^>]+>", "", text.replace("<br>", "\n"))
