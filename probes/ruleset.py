"""Finding rules: `[[finding]]` tables in probes/rules/findings.toml (and any `*.toml` with
`[[finding]]` tables in a `--probes DIR`), validated when loaded.

A rule names its `id`, `severity`, `title`, `explanation` and `fix` (text with `{name}`
placeholders filled from what the rule matched, see PLACEHOLDERS), and either a built-in
`check` (probes/checks.py: the detectors that need more than a path match, e.g. which
nsswitch.conf sources pulled an NSS module in) or a declarative `[finding.match]` table
(path globs, kind, via, class, result, Go API globs). A bad rule file raises `RuleError`:
one line naming the file, the rule and the key.
"""

from __future__ import annotations

import os
import string
import tomllib
from pathlib import Path
from typing import Any

from probes import checks
from probes.records import Rule, RuleError
from tracer.trace.model import Severity

RULES_DIR = Path(__file__).resolve().parent / "rules"
DEFAULT_FILE = RULES_DIR / "findings.toml"

# Placeholders any rule text may use; a check may fill more (listed in its docstring).
PLACEHOLDERS = frozenset({
    "go_api", "user_frame", "c_function", "paths", "found", "missing", "tried", "count",
    "sources", "modules", "reason", "interpreter", "libraries", "packages", "children",
    "feature", "env", "tags", "signal", "dockerfile", "first", "pids", "not_found",
    "not_found_note", "answered", "osusergo_effect", "base_image", "image_libraries", "rebuild",
    "elsewhere", "elsewhere_fix",
})
# params that are rule text too (validated like `fix`): the fix when no source answered
TEXT_PARAMS = ("fix_missing",)
MATCH_KEYS = {"path": list, "kind": list, "via": list, "class": list, "result": str,
              "go_api": list, "c_function": list}
RULE_KEYS = {"id", "severity", "title", "explanation", "fix", "check", "match", "params",
             "per", "summary"}
_CLASSES = ("declared", "hidden", "runtime-file", "program-file")
_RESULTS = ("ok", "error", "absent", "any")



def _fail(file: str, rule: str, key: str, what: str) -> RuleError:
    return RuleError(f"{file}: rule {rule!r}: key {key!r}: {what}")


def _check_text(file: str, rid: str, key: str, text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise _fail(file, rid, key, "must be a non-empty string")
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(text) if name}
    except ValueError as e:
        raise _fail(file, rid, key, f"bad placeholder syntax ({e})") from None
    unknown = sorted(names - PLACEHOLDERS)
    if unknown:
        raise _fail(file, rid, key, f"unknown placeholder {{{unknown[0]}}} (known: "
                    f"{', '.join(sorted(PLACEHOLDERS))})")
    return text


def _check_match(file: str, rid: str, match: Any) -> dict[str, Any]:
    if not isinstance(match, dict) or not match:
        raise _fail(file, rid, "match", "must be a non-empty table")
    for key, value in match.items():
        want = MATCH_KEYS.get(key)
        if want is None:
            raise _fail(file, rid, f"match.{key}", f"unknown key (known: "
                        f"{', '.join(sorted(MATCH_KEYS))})")
        if want is list and not (isinstance(value, list) and value
                                 and all(isinstance(v, str) for v in value)):
            raise _fail(file, rid, f"match.{key}", "must be a non-empty list of strings")
        if want is str and value not in _RESULTS:
            raise _fail(file, rid, f"match.{key}", f"must be one of {', '.join(_RESULTS)}")
    for c in match.get("class", ()):
        if c not in _CLASSES:
            raise _fail(file, rid, "match.class", f"{c!r} is not one of {', '.join(_CLASSES)}")
    return dict(match)


def parse_rule(raw: Any, file: str, index: int) -> Rule:
    """One `[[finding]]` table -> Rule, or RuleError naming file, rule and key."""

    if not isinstance(raw, dict):
        raise _fail(file, f"#{index + 1}", "finding", "must be a table")
    rid = raw.get("id")
    if not isinstance(rid, str) or not rid or not all(ch.isalnum() or ch in "-_." for ch in rid):
        raise _fail(file, f"#{index + 1}", "id", "must be a word of letters, digits, - _ .")
    for key in raw:
        if key not in RULE_KEYS:
            raise _fail(file, rid, key, f"unknown key (known: {', '.join(sorted(RULE_KEYS))})")
    try:
        severity = Severity(str(raw.get("severity")))
    except ValueError:
        raise _fail(file, rid, "severity", "must be error, warning or info") from None
    texts = {k: _check_text(file, rid, k, raw.get(k)) for k in ("title", "explanation", "fix")}
    check, match = raw.get("check"), raw.get("match")
    if (check is None) == (match is None):
        raise _fail(file, rid, "check", "give exactly one of `check` (built-in) or `match`")
    if check is not None and check not in checks.CHECKS:
        raise _fail(file, rid, "check", f"unknown check {check!r} (known: "
                    f"{', '.join(sorted(checks.CHECKS))})")
    params = raw.get("params", {})
    if not isinstance(params, dict):
        raise _fail(file, rid, "params", "must be a table")
    for key in TEXT_PARAMS:
        if key in params:
            _check_text(file, rid, f"params.{key}", params[key])
    per = raw.get("per", "site")
    if per not in ("site", "rule"):
        raise _fail(file, rid, "per", "must be 'site' or 'rule'")
    summary = raw.get("summary", "")
    if not isinstance(summary, str) or "{" in summary:
        raise _fail(file, rid, "summary", "must be a string without placeholders")
    return Rule(id=rid, severity=severity, check=check,
                match=_check_match(file, rid, match) if match is not None else {},
                params=dict(params), per=per, file=file, summary_text=summary.strip(),
                **texts)


def load_file(path: str | os.PathLike[str]) -> tuple[Rule, ...]:
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise RuleError(f"{name}: cannot read rule file ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise RuleError(f"{name}: not valid TOML ({e})") from None
    tables = data.get("finding", [])
    if not isinstance(tables, list):
        raise _fail(name, "-", "finding", "must be an array of tables ([[finding]])")
    return tuple(parse_rule(raw, name, i) for i, raw in enumerate(tables))


def load_rules(extra_dirs: tuple[str, ...] = ()) -> tuple[Rule, ...]:
    """The packaged rules plus every `*.toml` in `extra_dirs` (`--probes DIR`). A user rule
    with the id of a packaged one replaces it; two user files may not define one id."""
    rules: dict[str, Rule] = {r.id: r for r in load_file(DEFAULT_FILE)}
    seen: dict[str, str] = {}
    for d in extra_dirs:
        if not os.path.isdir(d):
            raise RuleError(f"{d}: no such probes directory")
        for p in sorted(Path(d).glob("*.toml")):
            for r in load_file(p):
                if r.id in seen:
                    raise _fail(str(p), r.id, "id", f"also defined in {seen[r.id]}")
                seen[r.id] = str(p)
                rules[r.id] = r
    return tuple(rules.values())


_DEFAULT: tuple[Rule, ...] | None = None


def default_rules() -> tuple[Rule, ...]:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = load_rules()
    return _DEFAULT
