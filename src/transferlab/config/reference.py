"""The configuration reference (docs/configuration.md), rendered from the code and the configs.

Every key of the run config with its default, its range and what it does:

- defaults: `configs/train.yaml` composed by Hydra as a plain `python train.py` runs it, and each
  other choice of a config group composed alone, for the keys (and values) only that choice has;
- ranges: the run config's rules (config/checks.py's RULES, as the caller passes them) and each
  strategy's knob dataclass (a field's `rule(...)` metadata), the checks a value must pass;
- what a key does: the comment on it in the config file that defines it (yaml_comments.py), else
  the comment on the knob's field in its strategy module, else the rule's hint.

Pure: reads configs/ and the objects it is given, returns the markdown. The strategies come in as
an argument because this layer may not import the fine-tuning layer; scripts/config_reference.py
gathers both and writes the file, and tests/test_docs.py checks that the committed file is current.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping

from omegaconf import OmegaConf

from transferlab.config.checks import Rule, rules_of
from transferlab.config.yaml_comments import FileComments, read_comments

COMMAND = "python scripts/config_reference.py"
# Groups whose choices set run-config keys, in the order the reference shows them.
KEY_GROUPS = ("task", "model", "data", "trainer", "logger", "callbacks", "paths", "debug")
# Sections of the reference by a key's first part; the run config's own keys come first.
SECTIONS = ("", "optim", "task", "model", "data", "trainer", "logger", "callbacks", "paths")
# Presets that set keys of the sections above, or Hydra's own settings: listed by choice only.
PRESET_GROUPS = ("experiment", "experiment_strategy", "hparams_search", "launcher", "hydra")
# Beyond this many other values a key's default names none of them.
OTHER_VALUES_SHOWN = 3


# --- the configs -------------------------------------------------------------------------------
def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: tree}


def _compose_train(config_dir: Path):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(config_dir), version_base="1.3"):
        return compose("train", return_hydra_config=True)


def _options(config_dir: Path, group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))


def _join(package: str, key: str) -> str:
    return f"{package}.{key}" if package and key else package or key


class _Configs:
    """The config files, each read once: their comments, their defaults lists and their keys.

    Hydra composes the default run (one `compose`, as `python train.py` does); every other choice
    is merged here by the same defaults-list rules, as far as the configs use them, since a
    `compose` per choice would make the reference slow to check. `render` compares the two on the
    default run, so a config that outgrows these rules fails loudly rather than documenting wrong."""

    def __init__(self, config_dir: Path):
        self.dir = config_dir
        self._comments: dict[Path, FileComments] = {}
        self._bodies: dict[Path, dict] = {}

    def of(self, path: Path) -> FileComments:
        if path not in self._comments:
            self._comments[path] = read_comments(path)
        return self._comments[path]

    def body(self, path: Path) -> dict:
        if path not in self._bodies:
            self._bodies[path] = OmegaConf.to_container(OmegaConf.load(path)) or {}
        return self._bodies[path]

    def tree(self, files: list[tuple[Path, str]]) -> dict[str, Any]:
        """The files merged in order, each at its package, flattened and unresolved."""
        merged = OmegaConf.create()
        for path, package in files:
            node: Any = {k: v for k, v in self.body(path).items() if k != "defaults"}
            for part in reversed(package.split(".") if package else []):
                node = {part: node}
            merged = OmegaConf.merge(merged, node)
        return _flatten(OmegaConf.to_container(merged, resolve=False))

    def walk(self, rel: str, package: str, choices: Mapping[str, Any]) -> list[tuple[Path, str]]:
        """The files a config merges, in merge order, each with the package its keys land in
        (the subset of Hydra's defaults-list rules the configs use)."""
        path = self.dir / f"{rel}.yaml"
        header = self.of(path).package
        if header is not None:
            package = "" if header == "_global_" else header
        group = rel.rsplit("/", 1)[0] if "/" in rel else ""
        defaults = self.body(path).get("defaults", [])
        out: list[tuple[Path, str]] = []
        self_seen = False
        for entry in defaults:
            if entry == "_self_":
                out.append((path, package))
                self_seen = True
            elif isinstance(entry, str):  # another config: /base/x@_here_, or one of the same group
                name, _, pkg = entry.partition("@")
                target = name.lstrip("/") if name.startswith("/") or not group else f"{group}/{name}"
                out += self.walk(target, package if pkg in ("", "_here_") else _join(package, pkg), choices)
            else:  # {group: option}
                ((key, option),) = entry.items()
                if key.startswith("override"):
                    continue
                key = key.removeprefix("optional").strip()
                grp, _, pkg = key.partition("@")
                option = choices.get(key, choices.get(grp, option))
                if option is None or not (self.dir / grp / f"{option}.yaml").exists():
                    continue
                out += self.walk(f"{grp}/{option}", _join(package, pkg or grp.replace("/", ".")), choices)
        if not self_seen:  # Hydra's place for a missing _self_: after the defaults
            out.append((path, package))
        return out

    def describe(self, key: str, files: list[tuple[Path, str]], specific: bool) -> str:
        """The comment on `key` in the first of `files` that has one (the last if `specific`)."""
        for path, package in reversed(files) if specific else files:
            rel = key if not package else key[len(package) + 1:] if key.startswith(package + ".") else None
            if rel is not None and rel in self.of(path).keys:
                return self.of(path).keys[rel]
        return ""

    def header(self, rel: str) -> str:
        return self.of(self.dir / f"{rel}.yaml").header


def _first_sentence(text: str) -> str:
    """Up to the first full stop outside brackets (a header's usage examples follow it)."""
    depth = 0
    for i, ch in enumerate(text):
        depth += (ch in "([") - (ch in ")]")
        if ch == "." and depth <= 0 and (i + 1 == len(text) or text[i + 1] == " "):
            return text[: i + 1]
    return text


# --- the strategies' knobs ---------------------------------------------------------------------
_FIELD = re.compile(r"^\s+(\w+)\s*:[^=]*=.*?\s#\s*(.+)$")


def _field_comments(cls: type) -> dict[str, str]:
    """Comments on a dataclass's fields in its source: at the line's end, or the block above."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    out, block = {}, []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#"):
            block.append(stripped.lstrip("#").strip())
            continue
        m = _FIELD.match(line) or re.match(r"^\s+(\w+)\s*:[^=]*=", line)
        if m:
            comment = m.group(2).strip() if m.re is _FIELD else " ".join(block)
            if comment:
                out.setdefault(m.group(1), comment)
        block = []
    return out


def _knob_comment(config_cls: type, name: str) -> str:
    """The comment on knob `name` in the first class of the config's MRO that has one; else the
    docstring of a one-knob mixin that declares it (LayerDecay, TopGroups)."""
    mro = [c for c in config_cls.__mro__ if dataclasses.is_dataclass(c)]
    for cls in mro:
        comment = _field_comments(cls).get(name)
        if comment:
            return comment
    for cls in mro:
        doc = cls.__dict__.get("__doc__") or ""
        # dataclass() writes a signature as the docstring of a class that has none
        if list(cls.__dict__.get("__annotations__", {})) == [name] and doc and not doc.startswith(f"{cls.__name__}("):
            return " ".join(doc.split())
    return ""


# --- rendering ---------------------------------------------------------------------------------
def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _code(value: Any) -> str:
    return f"`{_show(value)}`".replace("|", "\\|")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(row) + " |" for row in rows), ""]


def _range_and_doc(rule: Rule | None, comment: str) -> tuple[str, str]:
    if rule is None:
        return "", _cell(comment)
    if not comment:
        return _cell(rule.describe()), _cell(rule.hint)
    return _cell(rule.describe() + (f" ({rule.hint})" if rule.hint else "")), _cell(comment)


def _choices_phrase(group: str, options: list[str]) -> str:
    return f"{group}={', '.join(options)}"


def _default_cell(key: str, default: dict[str, Any], others: dict[str, dict[str, list[str]]]) -> str:
    """The default, and the values other choices of a group give the key."""
    values = others.get(key, {})
    if key in default:
        shown = _code(default[key])
        other = {v: opts for v, opts in values.items() if v != _show(default[key])}
        if not other:
            return shown
        if len(other) > OTHER_VALUES_SHOWN:
            return f"{shown}; other choices set their own"
        return shown + "; " + "; ".join(f"{_code(v)} with {opts}" for v, opts in other.items())
    if len(values) > OTHER_VALUES_SHOWN:
        return "set by each of " + "; ".join(values.values())
    return "; ".join(f"{_code(v)} with {opts}" for v, opts in values.items()) or "–"


def render(config_dir: str | Path, rules: Mapping[str, Rule], strategies: Mapping[str, type]) -> str:
    """The reference as markdown. `rules`: the run config's range rules by dotted key;
    `strategies`: the strategy classes by name (each with its knob dataclass as `Config`)."""
    config_dir = Path(config_dir)
    configs = _Configs(config_dir)
    cfg = _compose_train(config_dir)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    tree = OmegaConf.to_container(cfg, resolve=False)
    tree.pop("hydra")
    default = _flatten(tree)
    default_files = configs.walk("train", "", choices)
    ours = {k: v for k, v in configs.tree(default_files).items() if not k.startswith("hydra.")}
    if ours != default:
        differ = sorted(k for k in set(ours) | set(default) if ours.get(k, "<none>") != default.get(k, "<none>"))
        raise ValueError(f"config/reference.py merges configs/ otherwise than Hydra does, at {', '.join(differ[:5])}: "
                         "teach _Configs.walk the defaults-list rule these configs use")

    # Keys and values of every other choice of the key groups, each merged alone.
    alternatives = [(g, o) for g in KEY_GROUPS for o in _options(config_dir, g) if choices.get(g) != o]
    by_value: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    files_of: dict[str, list[tuple[Path, str]]] = defaultdict(list)
    for group, option in alternatives:
        files = configs.walk(f"{group}/{option}", group, {})
        for key, value in configs.tree(files).items():
            by_value[key][_show(value)].append(f"{group}={option}")
            files_of[key] += [f for f in files if f not in files_of[key]]
    others = {k: {v: _merge_options(opts) for v, opts in vals.items()} for k, vals in by_value.items()}

    keys = [k for k in default if not k.startswith("strategy.")]
    keys += [k for k in by_value if k not in default and k not in keys]
    keys += [k for k in rules if k not in keys and not k.startswith("strategy.")]

    lines = [
        "# Configuration reference",
        "",
        f"<!-- Generated by `{COMMAND}` (make config-reference) from configs/ and the range rules in the code; "
        "do not edit by hand: tests/test_docs.py fails when this file is stale. -->",
        "",
        "Every key is a Hydra override of `python train.py` (`python train.py data.batch_size=64 strategy=lora "
        "strategy.r=16`); a config group is chosen by name (`model=minilm`). The defaults are those of a "
        "plain `python train.py` (the groups' default choices, `configs/train.yaml`); where another choice "
        "of a group sets a key otherwise, the default column says so. A value outside its range is refused "
        "in one line before anything loads (`src/transferlab/config/checks.py`, and each strategy's "
        "knobs in `src/transferlab/finetune/strategies/`). `???` must be set.",
        "",
        f"Regenerate after changing a config, a rule or a knob: `{COMMAND}` (`--check` exits 1 when "
        "this file is stale).",
        "",
        "Contents: " + ", ".join(f"[{_section_title(s)}](#{anchor(_section_title(s))})" for s in SECTIONS)
        + ", [strategies](#strategies), [presets](#presets).",
        "",
    ]
    train_comments = configs.of(config_dir / "train.yaml").keys
    for section in SECTIONS:
        title = _section_title(section)
        lines += [f"## {title}", ""]
        group_doc = train_comments.get(f"defaults.{section}")
        if group_doc:
            lines += [_cell(group_doc), ""]
        if section in KEY_GROUPS:
            lines += _choices_table(configs, config_dir, section, choices.get(section))
        rows = []
        for key in (k for k in keys if _section_of(k) == section):
            # The default choices' files first; a key they leave uncommented may be described where another choice sets it.
            files = (default_files if key in default else []) + files_of.get(key, [])
            rng, doc = _range_and_doc(rules.get(key), configs.describe(key, files, specific=False))
            rows.append([f"`{key}`", _default_cell(key, default, others), rng, doc])
        lines += _table(["key", "default", "range", "what it does"], rows)

    lines += _strategies(config_dir, configs, rules, strategies, choices.get("strategy"))
    lines += ["## Presets", "",
              "Config groups that set keys of the sections above together (or Hydra's own settings), "
              "chosen by name.", ""]
    for group in ("debug", *PRESET_GROUPS):
        lines += [f"### `{group}`", ""]
        doc = train_comments.get(f"defaults.{group}")
        if doc:
            lines += [_cell(doc), ""]
        lines += _choices_table(configs, config_dir, group, choices.get(group))
    return "\n".join(lines).rstrip() + "\n"


def _merge_options(options: list[str]) -> str:
    """`data=a, b` for options of one group (the order they were composed in)."""
    by_group: dict[str, list[str]] = defaultdict(list)
    for o in options:
        group, _, name = o.partition("=")
        by_group[group].append(name)
    return "; ".join(_choices_phrase(g, names) for g, names in by_group.items())


def _section_of(key: str) -> str:
    head = key.split(".", 1)[0]
    return head if "." in key and head in SECTIONS else ""


def _section_title(section: str) -> str:
    return f"`{section}`" if section else "Top level"


def anchor(heading: str) -> str:
    """GitHub's anchor for a markdown heading: its text (links as their text) in lower case,
    punctuation dropped, spaces as hyphens (a repeated heading's anchor gets -1, -2, ... on GitHub)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def _choices_table(configs: _Configs, config_dir: Path, group: str, chosen: Any) -> list[str]:
    rows = []
    for option in _options(config_dir, group):
        name = f"**`{option}`** (default)" if option == chosen else f"`{option}`"
        rows.append([name, _cell(_first_sentence(configs.header(f"{group}/{option}")))])
    return _table([f"{group}=", "what it is"], rows) if rows else []


def _strategies(config_dir: Path, configs: _Configs, rules: Mapping[str, Rule], strategies: Mapping[str, type],
                chosen: Any) -> list[str]:
    lines = ["## Strategies", "",
             "`strategy=<name>` chooses one (`configs/strategy/<name>.yaml` and "
             "`src/transferlab/finetune/strategies/<name>.py`); its knobs are `strategy.<knob>`, and a knob "
             "another strategy has is refused by name. The knobs every strategy has come from "
             "`configs/base/strategy.yaml`.", ""]
    for name in _options(config_dir, "strategy"):
        files = configs.walk(f"strategy/{name}", "strategy", {})
        flat = configs.tree(files)
        cls = strategies.get(name)
        knobs = {k.removeprefix("strategy."): v for k, v in flat.items() if k != "strategy.name"}
        config_cls = getattr(cls, "Config", None)
        fields = {f.name: f for f in dataclasses.fields(config_cls)} if config_cls else {}
        for f in fields.values():  # knobs the module declares that its yaml leaves to the default
            if f.name != "name" and f.name not in knobs:
                knobs[f.name] = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        knob_rules = rules_of(config_cls) if config_cls else {}
        title = f"`strategy={name}`" + (" (default)" if name == chosen else "")
        lines += [f"### {title}", "", _cell(configs.header(f"strategy/{name}")), ""]
        facts = _strategy_facts(cls)
        if facts:
            lines += [facts, ""]
        rows = []
        for knob, value in knobs.items():
            comment = configs.describe(f"strategy.{knob}", files, specific=True)
            comment = comment or (_knob_comment(config_cls, knob) if config_cls else "")
            rng, doc = _range_and_doc(knob_rules.get(knob), comment)
            rows.append([f"`strategy.{knob}`", _code(value), rng, doc])
        lines += _table(["knob", "default", "range", "what it does"], rows)
    return lines


def _strategy_facts(cls: type | None) -> str:
    if cls is None:
        return ""
    facts = []
    modality = getattr(cls, "modality", "") or None
    inputs = (modality,) if modality else getattr(cls, "modalities", ())
    if inputs:
        facts.append("inputs: " + " and ".join(f"{m}s" for m in inputs))
    if not getattr(cls, "trains_network", True):
        facts.append("no network (a classical baseline)")
    if getattr(cls, "needs_unlabeled", False):
        facts.append("needs an unlabelled pool (`data.unlabeled`)")
    return ("*" + "; ".join(facts) + ".*") if facts else ""
