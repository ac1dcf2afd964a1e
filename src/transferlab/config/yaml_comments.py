"""The comments of a config file, by the dotted key they describe (for the configuration reference).

A key's comment is the one at the end of its line, or else the block of comment lines right above
it. The block at the top of a file describes the file (`header`: its first paragraph, before an
empty or indented comment line such as a usage example), not its first key. The entries of
a `defaults:` list are keyed `defaults.<group>` (`defaults.task` for `- task: classify`), so the
comment above one describes that config group. This reads the subset of YAML the configs use
(block mappings, one key per line, flow or block lists), not YAML at large.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_KEY = re.compile(r"^(?P<indent> *)(?P<dash>- +)?(?:(?:optional|override) +)?(?P<key>/?[A-Za-z_][\w@/.-]*)\s*:(?:\s+|$)(?P<rest>.*)$")


@dataclass
class FileComments:
    header: str = ""
    package: str | None = None  # from a `# @package <name>` line
    keys: dict[str, str] = field(default_factory=dict)


def _split_comment(rest: str) -> tuple[str, str]:
    """The value and the comment of what follows `key:`; a # inside quotes is part of the value."""
    quote = None
    for i, ch in enumerate(rest):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or rest[i - 1] in " \t"):
            return rest[:i].strip(), rest[i + 1:].strip()
    return rest.strip(), ""


def read_comments(path: Path) -> FileComments:
    out = FileComments()
    block: list[str] = []
    header_open = True  # still in the comment block the file starts with
    header_para_done = False
    stack: list[tuple[int, str]] = []  # (indent, key) of the mappings the line is inside
    for raw in path.read_text().splitlines():
        line = raw.rstrip()
        stripped = line.strip()
        if stripped.startswith("#"):
            text = stripped.lstrip("#").strip()
            if text.startswith("@package"):
                out.package = text.split(None, 1)[1].strip() if len(text.split()) > 1 else ""
            elif header_open:
                # The header's first paragraph; an empty or indented comment line starts examples.
                raw_text = stripped.lstrip("#")
                if not text or raw_text.startswith("  "):
                    header_para_done = True
                if not header_para_done:
                    out.header = f"{out.header} {text}".strip()
            else:
                block.append(text)
            continue
        if not stripped:
            header_open = False
            block = []
            continue
        header_open = False
        m = _KEY.match(line)
        if m is None:  # a list entry or a continuation: nothing to key
            block = []
            continue
        indent = len(m["indent"]) + (len(m["dash"]) if m["dash"] else 0)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parents = [k for _, k in stack]
        value, inline = _split_comment(m["rest"])
        key = m["key"]
        if m["dash"]:  # `- group: option` in a defaults list
            key = key.split("@", 1)[0].strip("/")
        dotted = ".".join([*parents, key])
        comment = inline or " ".join(t for t in block if t)
        if comment:
            out.keys[dotted] = comment
        block = []
        if not value and not m["dash"]:
            stack.append((indent, key))
    out.header = out.header.rstrip(":")
    return out
