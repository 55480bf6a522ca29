"""Generated spec files for fuzzing `load_spec`: the specs the project ships, mutated, and text
that is no spec at all. Shared by tests/unit/test_spec_fuzz.py (a few hundred per run) and
bench/spec_fuzz_bench.py (10,000, with counts).

Every input comes labelled with the kind of damage it carries, so that a run can say what it
tried; `refusal_kind` sorts the loader's answers the same way.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from plan.spec import MigrationSpec
from plan.spec_loader import MAX_TEXT_CHARS, SpecError

README = Path(__file__).resolve().parent.parent / "README.md"

Labelled = tuple[str, str]  # (kind of input, spec text)


def shipped_specs() -> list[dict[str, Any]]:
    """The README's spec examples, every field at its default, and the command strategy."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.DOTALL)
    examples = [yaml.safe_load(block) for block in blocks if block.startswith("cluster:")]
    every_field = MigrationSpec.model_validate({"cluster": {"name": "prod"}}).model_dump(
        by_alias=True, mode="json")
    command = {"cluster": {"name": "prod", "inCluster": True},
               "reboot": {"strategy": "command", "command": ["ssh", "{node}", "sudo", "reboot"]}}
    assert len(examples) >= 2, "the README's spec examples moved"
    return [*examples, every_field, command]


SHIPPED = shipped_specs()

# --- mutated specs: the shape is right, a few values are not ---------------------------------

edge_scalars = st.one_of(
    st.none(), st.booleans(),
    st.sampled_from([0, -1, 1, 65535, 65536, 2**31, 2**63, -(2**63), 10**30, 1e308, -0.0,
                     float("inf"), float("-inf"), float("nan")]),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", " ", "yes", "no", "on", "null", "~", "0x1F", "0o17", "1_000", "1e400",
                     "25%", "101%", "-5%", "15m", "-1s", "1h30m", "PT15M", "P1D", "0s", "1d1d",
                     "10.245.0.0/16", "10.245.0.1/16", "300.1.1.1/8", "::/0", "fd00::/8",
                     "busybox:1.37.0", "UPPER:tag", "a" * 300, "ünïcödé", "雲", "🙂",
                     "\u202eevil", "line\nbreak", "tab\there", "{node}", "--", "---"]),
    st.text(max_size=40))
edge_values = st.recursive(
    edge_scalars,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=12) | st.integers(), children, max_size=4),
    max_leaves=10)


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key and list index in ``document``, as paths from the top."""
    found: list[tuple[Any, ...]] = []
    children = (document.items() if isinstance(document, dict)
                else enumerate(document) if isinstance(document, list) else ())
    for key, value in children:
        found.append((*prefix, key))
        found.extend(_paths(value, (*prefix, key)))
    return found


def _misspelt(key: str, draw: st.DrawFn) -> str:
    how = draw(st.sampled_from(["snake", "upper", "swap", "drop", "extra"]))
    if how == "snake":
        return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), key)
    if how == "upper":
        return key.upper()
    if how == "swap" and len(key) > 1:
        return key[1] + key[0] + key[2:]
    if how == "drop" and len(key) > 1:
        return key[:-1]
    return key + draw(st.sampled_from(["s", "_", " ", "x"]))


@st.composite
def mutated_specs(draw: st.DrawFn) -> Labelled:
    """A shipped spec with one to four values replaced, keys removed, misspelt or added."""
    document = yaml.safe_load(yaml.safe_dump(draw(st.sampled_from(SHIPPED))))  # a deep copy
    kinds = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        paths = _paths(document)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = document
        for part in path[:-1]:
            parent = parent[part]
        key = path[-1]
        kind = draw(st.sampled_from(["value", "type", "remove", "misspell", "unknown key"]))
        if kind in ("misspell", "unknown key") and not isinstance(key, str):
            kind = "value"  # a list item has no key to misspell
        if kind == "value":
            parent[key] = draw(edge_values)
        elif kind == "type":
            old = parent[key]
            parent[key] = draw(st.sampled_from([[old], {"value": old}, str(old), None]))
        elif kind == "remove":
            del parent[key]
        elif kind == "misspell":
            parent[_misspelt(key, draw)] = parent.pop(key)
        else:
            parent[draw(st.text(max_size=12))] = draw(edge_values)
        kinds.append(kind)
    text = yaml.safe_dump(document, sort_keys=draw(st.booleans()),
                          allow_unicode=draw(st.booleans()),
                          default_flow_style=draw(st.sampled_from([False, True, None])))
    return "mutated: " + ",".join(sorted(set(kinds))), text


@st.composite
def spliced_specs(draw: st.DrawFn) -> Labelled:
    """A shipped spec's text with characters inserted, deleted or swapped: broken syntax."""
    text = yaml.safe_dump(draw(st.sampled_from(SHIPPED)), sort_keys=False)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        at = draw(st.integers(min_value=0, max_value=len(text)))
        junk = draw(st.sampled_from(["\t", ":", "- ", "[", "]", "{", "}", "&a ", "*a", "!!int ",
                                     "\n  ", "'", '"', "#", "|", ">", "%", "@", "`", "\x00",
                                     "\ufeff", "\x85", "\u2028"]) | st.text(max_size=4))
        cut = draw(st.integers(min_value=0, max_value=3))
        text = text[:at] + junk + text[at + cut:]
    return "spliced text", text


# --- text that is no spec ----------------------------------------------------------------------


def _alias_bomb(levels: int, width: int) -> str:
    """The "billion laughs": each level a list of `width` aliases of the level below."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels + 1):
        refs = ", ".join([f"*l{level - 1}"] * width)
        lines.append(f"l{level}: &l{level} [{refs}]")
    return "\n".join(lines) + "\ncluster: {name: a}\n"


def _merge_bomb(levels: int) -> str:
    """The same growth through merge keys instead of lists."""
    lines = ["m0: &m0 {a: 1, b: 2, c: 3}"]
    for level in range(1, levels + 1):
        merged = ", ".join([f"*m{level - 1}"] * 10)
        lines.append(f"m{level}: &m{level} {{<<: [{merged}], k{level}: {level}}}")
    return "\n".join(lines) + "\ncluster: {name: a}\n"


HOSTILE: dict[str, str] = {
    "billion laughs (10^9)": _alias_bomb(levels=9, width=10),
    "wide alias bomb": _alias_bomb(levels=3, width=400),
    "merge-key bomb": _merge_bomb(levels=8),
    "recursive alias": "cluster: &c {name: a, self: *c}\n",
    "deep list nesting": "cluster: {name: a}\ncilium:\n  extraValues: {x: " + "[" * 5000
                         + "]" * 5000 + "}\n",
    "deep map nesting": "cluster: {name: a}\ncilium:\n  extraValues: " + "{a: " * 2000
                        + "1" + "}" * 2000 + "\n",
    "just too deep for the loader": "cluster: {name: a}\ncilium:\n  extraValues: "
                                    + "{a: " * 60 + "1" + "}" * 60 + "\n",
    "a 5000-digit number": "cluster: {name: a}\nnetwork: {tunnelPort: " + "9" * 5000 + "}\n",
    "a 5000-digit float": "cluster: {name: a}\nnetwork: {tunnelPort: 1" + "0" * 5000 + ".5}\n",
    "over the size limit": "cluster: {name: a}\n#" + "x" * MAX_TEXT_CHARS,
    "a long line under the limit": "cluster: {name: '" + "a" * (MAX_TEXT_CHARS - 100) + "'}\n",
    "many keys": "cluster: {name: a}\ncilium:\n  extraValues:\n"
                 + "".join(f"    k{i}: {i}\n" for i in range(20_000)),
    "python object tag": "cluster: !!python/object/apply:os.system [echo hi]\n",
    "python name tag": "cluster: {name: !!python/name:os.system a}\n",
    "binary tag": "cluster: {name: !!binary aGVsbG8=}\n",
    "custom tag": "cluster: !Cluster {name: a}\n",
    "timestamp tag": "cluster: {name: !!timestamp 2024-01-01}\n",
    "set tag": "cluster: {name: a}\nrollout: {firstNodes: !!set {a, b}}\n",
    "bad int tag": "cluster: {name: a}\nnetwork: {tunnelPort: !!int eighty}\n",
    "bad float tag": "cluster: {name: a}\nnetwork: {tunnelPort: !!float x}\n",
    "two documents": "cluster: {name: a}\n---\ncluster: {name: b}\n",
    "directives": "%YAML 1.1\n%TAG ! tag:example.com,2000:\n---\ncluster: {name: a}\n",
    "unknown directive": "%FOO bar\n---\ncluster: {name: a}\n",
    "repeated keys": "cluster: {name: a}\ncluster: {name: b}\n",
    "repeated nested keys": "cluster:\n  name: a\n  name: b\n",
    "NUL byte": "cluster: {name: a\x00}\n",
    "BOM": "\ufeffcluster: {name: a}\n",
    "two BOMs": "\ufeff\ufeffcluster: {name: a}\n",
    "lone surrogate": "cluster: {name: a\udcff}\n",
    "C1 control": "cluster: {name: a\x85b}\n",
    "tabs for indentation": "cluster:\n\tname: a\n",
    "only a comment": "# nothing here\n",
    "only whitespace": " \n\t\n",
    "document end only": "...\n",
    "a list": "- cluster: {name: a}\n",
    "a string": "cluster\n",
    "a number": "8473\n",
    "null": "null\n",
    "an empty mapping": "{}\n",
    "a mapping key": "? [a, b]\n: c\n",
    "complex keys": "cluster: {name: a}\n{a: 1}: b\n",
    "unclosed flow": "cluster: {name: a\n",
    "unclosed quote": "cluster: {name: 'a}\n",
}


def _garbage_bytes(data: bytes) -> str:
    # The CLI reads spec files as UTF-8 with errors replaced (client/plan_commands.py).
    return data.decode("utf-8", errors="replace")


raw_text: st.SearchStrategy[Labelled] = st.one_of(
    st.text(max_size=300).map(lambda text: ("random text", text)),
    st.binary(max_size=300).map(lambda data: ("random bytes", _garbage_bytes(data))),
    st.text(st.sampled_from(list("{}[]:,-?&*!|>'\"%@`#\n\t ")) | st.characters(),
            max_size=120).map(lambda text: ("YAML punctuation", text)),
    st.sampled_from(sorted(HOSTILE.items())).map(lambda item: (f"hostile: {item[0]}", item[1])),
)


def spec_inputs() -> st.SearchStrategy[Labelled]:
    """Half shapes that look like specs, half text that is none."""
    return st.one_of(mutated_specs(), spliced_specs(), raw_text)


# --- the loader's answers -------------------------------------------------------------------

REFUSAL_KINDS = (  # first match wins, on the first problem's message
    ("larger than", "too large"),
    ("nested too deeply or expands too far", "alias bomb or nesting"),
    ("not valid YAML", "not YAML"),
    ("repeats line", "repeated key"),
    ("the spec is empty", "empty"),
    ("top level must be a mapping", "not a mapping"),
    ("unknown key", "unknown key"),
    ("required", "missing or conditional field"),
)


# A problem's line names the file, line, path and what is wrong; values are cut short.
MAX_PROBLEM_LINE = 1_000


def refusal_kind(error: SpecError) -> str:
    message = error.problems[0].message
    for marker, kind in REFUSAL_KINDS:
        if marker in message:
            return kind
    return "wrong value"


def yaml_line_count(text: str) -> int:
    """Lines as YAML counts them: NEL (U+0085), U+2028 and U+2029 end a line too, as do CR and
    CRLF, so a problem may sit on a line that ``text.count("\\n")`` does not see."""
    return len(re.findall(r"\r\n|[\n\r\x85\u2028\u2029]", text)) + 1


def check_answer(text: str, source: str = "fuzz.yaml") -> SpecError | None:
    """Loads ``text``; None when it is a spec, the SpecError when it is refused. Anything else
    (another exception, or a SpecError without a usable message) fails the assertion."""
    from plan.spec_loader import load_spec

    try:
        spec = load_spec(text, source=source)
    except SpecError as error:
        assert error.problems, "a SpecError must carry at least one problem"
        for problem in error.problems:
            assert problem.message.strip(), problem
            assert problem.line is None or 1 <= problem.line <= yaml_line_count(text) + 1, problem
            assert "Traceback" not in problem.message and "object at 0x" not in problem.message
        rendered = str(error)
        assert rendered.startswith(f"{source}: invalid migration spec"), rendered
        assert max(map(len, rendered.splitlines())) <= MAX_PROBLEM_LINE, "a long message line"
        return error
    assert isinstance(spec, MigrationSpec)
    return None
