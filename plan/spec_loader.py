"""Reading a MigrationSpec from YAML text, with errors that point at the offending line.

The contract is narrow on purpose: for any string, `load_spec` returns a spec or raises SpecError.
Operators edit these files by hand, so every problem names its dotted YAML path, its line and
what was expected, and all problems are reported at once rather than one per attempt.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from plan.spec import MigrationSpec

# Spec files are a few kilobytes; these bounds keep hostile input (alias bombs, deep nesting)
# from costing more than a moment before it is rejected.
MAX_TEXT_CHARS = 1_000_000
MAX_NODES = 100_000
MAX_DEPTH = 48

YamlPath = tuple[str | int, ...]


class SpecProblem(BaseModel):
    """One thing wrong with a spec file."""

    model_config = ConfigDict(frozen=True)

    path: str  # dotted YAML path, e.g. "network.podCIDRs[0]"; "" for the document itself
    line: int | None  # 1-based, when the YAML node could be located
    message: str


class SpecError(ValueError):
    """The spec text cannot be used; `problems` lists every reason found."""

    def __init__(self, source: str, problems: list[SpecProblem],
                 what: str = "migration spec") -> None:
        self.source = source
        self.problems = problems
        self.what = what  # the kind of file: a migration spec or a fleet file
        super().__init__(self._render())

    def _render(self) -> str:
        count = len(self.problems)
        header = f"{self.source}: invalid {self.what} ({count} problem{'s' * (count != 1)})"
        lines = [header]
        for problem in self.problems:
            where = f"{self.source}:{problem.line}" if problem.line else self.source
            what = f"{problem.path}: " if problem.path else ""
            lines.append(f"  {where}: {what}{problem.message}")
        return "\n".join(lines)


class _SpecYamlLoader(yaml.SafeLoader):
    """Safe YAML without implicit timestamps: a date-looking value stays the string typed."""


_SpecYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _refuse_set(loader: yaml.SafeLoader, node: yaml.Node) -> None:
    # A !!set has no order, and node lists are ordered: their order decides who goes first.
    raise yaml.constructor.ConstructorError(
        None, None, "!!set is not supported here; write a list", node.start_mark
    )


_SpecYamlLoader.add_constructor("tag:yaml.org,2002:set", _refuse_set)


def load_spec(text: str, source: str = "<spec>") -> MigrationSpec:
    """Parse and validate a spec; raise SpecError (and nothing else) when it is unusable."""
    if not isinstance(text, str):
        raise SpecError(source, [SpecProblem(path="", line=None, message="expected YAML text")])
    if len(text) > MAX_TEXT_CHARS:
        message = f"the file is larger than {MAX_TEXT_CHARS} characters; is it really a spec?"
        raise SpecError(source, [SpecProblem(path="", line=None, message=message)])
    data, lines = _parse_yaml(text, source)
    if data is None:
        message = "the spec is empty; it needs at least cluster.name"
        raise SpecError(source, [SpecProblem(path="", line=1, message=message)])
    if not isinstance(data, dict):
        message = f"the top level must be a mapping of sections, not a {type(data).__name__}"
        raise SpecError(source, [SpecProblem(path="", line=1, message=message)])
    try:
        # by_name=False: the file must use the documented camelCase keys.
        return MigrationSpec.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as error:
        raise SpecError(source, validation_problems(error, data, lines)) from None


def read_yaml(text: str, source: str) -> tuple[object, dict[YamlPath, int]]:
    """The document of a spec-like file (checked for size, shape and repeated keys) and the
    line of each key and item by its path; raises SpecError when it is not usable YAML."""
    if len(text) > MAX_TEXT_CHARS:
        message = f"the file is larger than {MAX_TEXT_CHARS} characters; is it really a spec?"
        raise SpecError(source, [SpecProblem(path="", line=None, message=message)])
    return _parse_yaml(text, source)


def problem_at(lines: dict[YamlPath, int], path: YamlPath, message: str) -> SpecProblem:
    """A problem found past validation (e.g. a name that refers to nothing), at ``path``."""
    return SpecProblem(path=_render_path(path), line=_nearest_line(path, lines), message=message)


def validation_problems(error: ValidationError, data: object, lines: dict[YamlPath, int],
                        model: type[BaseModel] = MigrationSpec,
                        locate: Callable[[YamlPath], YamlPath] | None = None
                        ) -> list[SpecProblem]:
    """One problem per validation error of ``model`` over ``data``, sorted by line.
    ``locate`` maps a path in ``data`` to where it is written in the file, when ``data`` was
    assembled from several places of it (a fleet's defaults and a cluster's overrides)."""
    problems = [_problem(item, data, lines, model, locate)
                for item in error.errors(include_url=False)]
    return sorted(problems, key=lambda problem: problem.line or 0)


def spec_json_schema() -> dict[str, Any]:
    """JSON Schema of the spec file (camelCase keys), for editors and documentation."""
    schema = MigrationSpec.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "cilium-migrate MigrationSpec"
    return schema


# --- YAML -----------------------------------------------------------------------------------


def _parse_yaml(text: str, source: str) -> tuple[object, dict[YamlPath, int]]:
    """Compose, check and construct the document; return the data and a path -> line map."""
    loader: _SpecYamlLoader | None = None
    try:
        loader = _SpecYamlLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None, {}
        _check_shape(node, source)
        data = loader.construct_document(node)
        return data, _line_map(node)
    except SpecError:
        raise
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else None
        message = f"not valid YAML: {error.problem or error.context or 'syntax error'}"
        raise SpecError(source, [SpecProblem(path="", line=line, message=message)]) from None
    except RecursionError:
        # PyYAML composes nested collections recursively: thousands of "[" stop it here,
        # before _check_shape can count the levels.
        message = f"not valid YAML: nested far deeper than a spec ({MAX_DEPTH} levels at most)"
        raise SpecError(source, [SpecProblem(path="", line=None, message=message)]) from None
    except Exception as error:
        # PyYAML raises assorted types for crafted input (explicit !!int "x" tags raise
        # ValueError); all of them mean "not a usable document".
        reason = " ".join(str(error).split())[:200]
        message = f"not valid YAML: {type(error).__name__}: {reason}"
        raise SpecError(source, [SpecProblem(path="", line=None, message=message)]) from None
    finally:
        if loader is not None:
            loader.dispose()


def _check_shape(root: yaml.Node, source: str) -> None:
    """Reject alias bombs, runaway nesting and repeated keys before building any objects."""
    problems: list[SpecProblem] = []
    pending: list[tuple[yaml.Node, int]] = [(root, 0)]
    visited = 0
    while pending:
        node, depth = pending.pop()
        visited += 1
        if depth > MAX_DEPTH or visited > MAX_NODES:
            line = node.start_mark.line + 1
            message = "nested too deeply or expands too far (recursive or repeated aliases?)"
            raise SpecError(source, [SpecProblem(path="", line=line, message=message)])
        if isinstance(node, yaml.MappingNode):
            first_seen: dict[str, int] = {}
            for key, value in node.value:
                pending.append((key, depth + 1))
                pending.append((value, depth + 1))
                if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                    continue
                line = key.start_mark.line + 1
                if key.value in first_seen:
                    message = f"key {key.value!r} repeats line {first_seen[key.value]}"
                    problems.append(SpecProblem(path="", line=line, message=message))
                first_seen.setdefault(key.value, line)
        elif isinstance(node, yaml.SequenceNode):
            pending.extend((item, depth + 1) for item in node.value)
    if problems:
        raise SpecError(source, sorted(problems, key=lambda problem: problem.line or 0))


def _line_map(root: yaml.Node) -> dict[YamlPath, int]:
    """Map each mapping key and sequence item (by path) to the line it starts on."""
    lines: dict[YamlPath, int] = {(): root.start_mark.line + 1}
    pending: list[tuple[yaml.Node, YamlPath]] = [(root, ())]
    while pending:
        node, path = pending.pop()
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    child = (*path, str(key.value))
                    lines.setdefault(child, key.start_mark.line + 1)
                    pending.append((value, child))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                child = (*path, index)
                lines.setdefault(child, item.start_mark.line + 1)
                pending.append((item, child))
    return lines


# --- validation errors ----------------------------------------------------------------------


def _problem(error: Any, data: object, lines: dict[YamlPath, int],
             model: type[BaseModel] = MigrationSpec,
             locate: Callable[[YamlPath], YamlPath] | None = None) -> SpecProblem:
    kind = error["type"]
    path = _document_path(error["loc"], data)
    written = locate(path) if locate else path
    line = _nearest_line(written, lines)
    if kind == "missing":
        message = "required, but missing"
    elif kind == "extra_forbidden":
        message = _unknown_key_message(path, model)
    elif kind == "value_error":
        message = str(error.get("ctx", {}).get("error", error["msg"]))
    else:
        message = error["msg"]
        given = error.get("input")
        if not isinstance(given, (dict, list)):
            message += f" (got {_short(given)})"
        if isinstance(given, bool) and "string" in message.lower():
            message += "; YAML reads unquoted yes/no/on/off as booleans, so quote it"
    return SpecProblem(path=_render_path(written), line=line, message=message)


def _document_path(loc: tuple[Any, ...], data: object) -> YamlPath:
    """Keep the parts of a pydantic location that are keys or indexes in the document.

    Pydantic adds parts that are not in the document (`[key]` for dict keys, union members);
    following the data drops them. A missing key is, by definition, not in the document.
    """
    path: list[str | int] = []
    cursor = data
    for position, part in enumerate(loc):
        if isinstance(cursor, dict) and _has_key(cursor, part):
            path.append(str(part))
            cursor = cursor[part]
        elif isinstance(cursor, list) and isinstance(part, int) and 0 <= part < len(cursor):
            path.append(part)
            cursor = cursor[part]
        elif position == len(loc) - 1 and isinstance(cursor, dict) and _is_field_name(part):
            path.append(part)  # a key the document lacks: missing, or checked by default
    return tuple(path)


def _is_field_name(part: object) -> bool:
    # Pydantic's own location parts ("[key]", "function-after[...]") always carry a bracket.
    return isinstance(part, str) and "[" not in part


def _has_key(mapping: dict[Any, Any], key: object) -> bool:
    try:
        return key in mapping
    except TypeError:  # unhashable location part; it cannot be a key
        return False


def _nearest_line(path: YamlPath, lines: dict[YamlPath, int]) -> int | None:
    for length in range(len(path), -1, -1):
        if path[:length] in lines:
            return lines[path[:length]]
    return None


def _render_path(path: YamlPath) -> str:
    rendered = ""
    for part in path:
        if isinstance(part, int):
            rendered += f"[{part}]"
        else:
            rendered += f".{part}" if rendered else str(part)
    return rendered


def _unknown_key_message(path: YamlPath, model: type[BaseModel]) -> str:
    known = _known_keys(path[:-1], model)
    if not path or known is None:
        return "unknown key"
    key = str(path[-1])
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    return f"unknown key; expected one of: {', '.join(known)}"


def _known_keys(path: YamlPath, model: type[BaseModel]) -> list[str] | None:
    """The camelCase keys allowed under `path`, if a section of ``model`` lives there."""
    for part in path:
        if isinstance(part, int):  # an item of a list of sections: the list's own type
            continue
        by_alias = {field.alias or name: field for name, field in model.model_fields.items()}
        field = by_alias.get(str(part))
        annotation = field.annotation if field is not None else None
        if get_origin(annotation) is list:
            annotation = get_args(annotation)[0]
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return [field.alias or name for name, field in model.model_fields.items()]


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
