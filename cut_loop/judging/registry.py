"""Turning `judge.name` + the judge's options into a Judge.

`name` is resolved in this order:
1. `something.yaml` / `.yml`: a rubric file for the built-in `openai` judge (options["rubric"]);
2. `path/to/file.py:Name`: `Name` from that file;
3. `module.path:Name`: `Name` from an importable module;
4. a plain name: an entry point of group `cut_loop.judges` (this package declares its built-ins
   there: openai, hf, reward-model, rules, constraints, and the composites all, chain, vote;
   plugins add their own), else the same built-ins from a table in this file, so that a source
   checkout that was never pip-installed still works.
`Name` is a class or a factory callable; it is called with the options as keyword arguments,
and what it returns must have a callable `judge` method. Every user mistake is one line.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from cut_loop.errors import CutLoopError, foreign_error
from cut_loop.judging.base import Judge

GROUP = "cut_loop.judges"
# The built-ins, as their entry points read in pyproject.toml.
BUILTINS = {
    "openai": "cut_loop.judging.openai_judge:OpenAIJudge",
    "hf": "cut_loop.judging.hf_judge:HFJudge",
    "reward-model": "cut_loop.judging.reward_model:RewardModelJudge",
    "rules": "cut_loop.judging.rules:RulesJudge",
    "constraints": "cut_loop.judging.constraints:ConstraintsJudge",
    "all": "cut_loop.judging.composite:AllJudge",
    "chain": "cut_loop.judging.composite:ChainJudge",
    "vote": "cut_loop.judging.composite:VoteJudge",
}


def known_judges() -> dict[str, str]:
    """Plain names -> "module:attr" targets: the built-ins, then installed entry points."""
    found = dict(BUILTINS)
    found.update({ep.name: ep.value for ep in entry_points(group=GROUP)})
    return dict(sorted(found.items()))


def load_judge(name: str, options: dict[str, Any], cache: Path | None = None) -> Judge:
    """Build the judge `name` with `options` (the keys under `judge:` other than name and
    batch_size). A judge whose constructor takes a `cache` option and was given none gets
    `cache` (the loop passes a file in the run directory: answers a judge paid for survive a
    kill mid-batch). Raises a one-line CutLoopError for anything the user can fix."""
    options = dict(options)
    if name.endswith((".yaml", ".yml")):
        if not Path(name).expanduser().is_file():
            raise CutLoopError(f"judge {name!r}: rubric file {name} does not exist")
        options["rubric"] = name
        factory = _import_attr(BUILTINS["openai"], name)
    elif ":" in name:
        target, _, attr = name.rpartition(":")
        if target.endswith(".py") or "/" in target:
            factory = _attr_of(_load_file(name, Path(target).expanduser()), attr, name)
        else:
            factory = _import_attr(name, name)
    else:
        targets = known_judges()
        if name not in targets:
            raise CutLoopError(
                f"unknown judge {name!r}; known: {', '.join(targets)} "
                "(or module.path:Name, path/to/file.py:Name, a rubric .yaml)"
            )
        factory = _import_attr(targets[name], name)
    if cache is not None and "cache" not in options and _accepts(factory, "cache"):
        options["cache"] = str(cache)
    return _build(factory, options, name)


def _accepts(factory: Callable[..., Any], option: str) -> bool:
    try:
        return option in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def _import_attr(target: str, name: str) -> Any:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise CutLoopError(f"judge {name!r}: expected module.path:Name")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        # Tell "your module is not there" apart from "your module imports something missing".
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise CutLoopError(f"judge {name!r}: no module named {module_name!r}") from None
        raise CutLoopError(f"judge {name!r}: importing {module_name} failed: {e}") from None
    return _attr_of(module, attr, name)


def _load_file(name: str, path: Path) -> Any:
    if not path.is_file():
        raise CutLoopError(f"judge {name!r}: file {path} does not exist")
    # A stable, unique module name per file, registered before running it (dataclasses and
    # pickling look modules up in sys.modules); loading the same file twice reuses it.
    resolved = path.resolve()
    module_name = f"cut_loop_judge_{resolved.stem}_{hashlib.sha1(bytes(resolved)).hexdigest()[:8]}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:
        raise CutLoopError(f"judge {name!r}: cannot load {path} as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[module_name]
        raise foreign_error(f"judge {name!r}: importing {path}", e) from e
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _attr_of(module: Any, attr: str, name: str) -> Any:
    try:
        return getattr(module, attr)
    except AttributeError:
        where = getattr(module, "__file__", None) or module.__name__
        raise CutLoopError(f"judge {name!r}: {where} has no attribute {attr!r}") from None


def _build(factory: Any, options: dict[str, Any], name: str) -> Judge:
    if not callable(factory):
        raise CutLoopError(f"judge {name!r}: {factory!r} is neither a class nor a factory")
    _check_options(factory, options, name)
    try:
        judge = factory(**options)
    except CutLoopError:
        raise
    except (TypeError, ValueError) as e:
        # Option names were checked above, so this is a bad value (or the signature could not
        # be read and the name is wrong): either way the user's to fix.
        raise CutLoopError(f"judge {name!r}: bad option: {' '.join(str(e).split())}") from None
    if not callable(getattr(judge, "judge", None)):
        raise CutLoopError(
            f"judge {name!r}: {type(judge).__name__} has no judge(items) method, so it is "
            "not a Judge (see cut_loop/judging/base.py)"
        )
    return judge


def _check_options(factory: Callable[..., Any], options: dict[str, Any], name: str) -> None:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # some builtins and C types have no readable signature
        return
    params = signature.parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    accepted = [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise CutLoopError(
            f"judge {name!r}: unknown option(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(accepted) or 'none'}"
        )
    missing = [
        p.name for p in params
        if p.default is p.empty and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        and p.name not in options
    ]  # fmt: skip
    if missing:
        raise CutLoopError(f"judge {name!r}: missing required option(s) {', '.join(missing)}")
