"""Final-answer extraction from a model response.

Rules (docs/rewards.md):

- ``\\boxed{...}``: the LAST top-level box wins, braces are matched (``\\{``/``\\}`` escapes are
  skipped), so ``\\boxed{\\frac{\\sqrt{2}}{2}}`` is returned whole. A regex would stop at the first
  ``}`` and grade ``\\frac{\\sqrt{2`` instead.
- ``\\boxed 5`` (no braces, at least one space) is accepted and yields the following run of
  non-space characters, because Math-Verify accepts it too and models do write it.
- If the last box is unbalanced (``\\boxed{\\frac{1}{2}``, usually a truncated generation) the
  result is ``None``: we do not fall back to an earlier box, which would reward a hedge that the
  model later abandoned.
- ``\\fbox`` is not recognised.
"""

from __future__ import annotations

import re

__all__ = ["extract_boxed", "extract_answer_tag", "extract_answer", "extract_code", "find_boxes"]

_BOX_RE = re.compile(r"\\boxed(?![A-Za-z])")
_ANSWER_RE = re.compile(r"<answer>((?:(?!<answer>).)*?)</answer>", re.DOTALL)
_TOKEN_RE = re.compile(r"[^\s$]+")


def _match_group(text: str, open_idx: int) -> int | None:
    """Index just past the ``}`` closing the ``{`` at ``open_idx``; ``None`` if it never closes."""
    depth = 0
    i = open_idx
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2  # an escaped brace (or any escaped char) never changes the depth
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def find_boxes(text: str) -> list[tuple[int, int, str | None]]:
    """All top-level boxes as ``(start, end, content)``; ``content`` is ``None`` when unbalanced.

    Boxes nested inside another box are part of that box's content, not separate entries. An
    unbalanced box swallows the rest of the text, so it is always the last entry.
    """
    out: list[tuple[int, int, str | None]] = []
    pos = 0
    while True:
        m = _BOX_RE.search(text, pos)
        if m is None:
            return out
        j = m.end()
        k = j
        while k < len(text) and text[k].isspace():
            k += 1
        if k < len(text) and text[k] == "{":
            end = _match_group(text, k)
            if end is None:
                out.append((m.start(), len(text), None))
                return out
            out.append((m.start(), end, text[k + 1 : end - 1].strip()))
            pos = end
        elif k > j:  # "\boxed 5": one whitespace-delimited token
            t = _TOKEN_RE.match(text, k)
            if t is None:
                out.append((m.start(), len(text), None))
                return out
            out.append((m.start(), t.end(), t.group(0)))
            pos = t.end()
        else:  # "\boxed" glued to something that is neither a brace nor a space
            out.append((m.start(), j, None))
            pos = j


def extract_boxed(text: str) -> str | None:
    """Content of the last top-level ``\\boxed{...}`` (or ``\\boxed token``), stripped; else ``None``."""
    if not text or "\\boxed" not in text:
        return None
    boxes = find_boxes(text)
    return boxes[-1][2] if boxes else None


def extract_answer_tag(text: str) -> str | None:
    """Stripped content of the last complete ``<answer>...</answer>``; ``None`` if there is none."""
    if not text or "<answer>" not in text:
        return None
    last = None
    for m in _ANSWER_RE.finditer(text):
        last = m
    return None if last is None else last.group(1).strip()


def extract_answer(text: str) -> str | None:
    """The graded answer: the last box (see module rules), else the last ``<answer>`` tag, else ``None``."""
    boxed = extract_boxed(text)
    return boxed if boxed is not None else extract_answer_tag(text)


_FENCE_RE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.S | re.I)


def extract_code(response: str) -> str | None:
    """The program in a response: the last fenced block if there is one, else the whole response."""
    if not isinstance(response, str):
        return None
    blocks = _FENCE_RE.findall(response)
    code = blocks[-1] if blocks else response
    code = code.strip("\n").rstrip()
    return code or None
