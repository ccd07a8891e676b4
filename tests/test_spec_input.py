"""Spec files that are wrong in costly ways: huge grids, alias bombs, cycles, repeated keys, unreadable files.

Each is refused by the installed ``tuner`` command with exit 2 and a short
message, before a store or Ray is touched: no ``tuner.db`` appears in the
directory it runs in. Memory is capped, so a check that builds what it should
only count fails here instead of swapping.
"""

from __future__ import annotations

import ctypes
import os
import resource
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tuner import SpecError, load_spec, strategies

BASE = """\
workload: mlp
data: wine
epochs: 1
"""
LR = "  lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}\n"
# Python, torch and optuna fit well inside this; the grid and bomb of issue 15 grew past 2.5 GB.
MEMORY_CAP = 2 * 2**30


def _capped_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def tuner_cli(
    tmp_path: Path, *args: str, preexec: Callable[[], None] = _capped_memory
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TUNER_STORAGE", "RAY_ADDRESS")}
    return subprocess.run(
        [shutil.which("tuner") or "tuner", *args], cwd=tmp_path, env={**env, "COLUMNS": "200"},
        capture_output=True, text=True, timeout=120, preexec_fn=preexec,
    )


def assert_refused(proc: subprocess.CompletedProcess[str], tmp_path: Path) -> str:
    """Exit 2, no traceback, nothing stored in the working directory; returns stderr."""
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert not list(tmp_path.glob("tuner.db*")), "the store was opened before the mistake was caught"
    return proc.stderr


def write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def space(params: dict[str, Any], **keys: Any):
    """A spec over ``params`` for a user workload, which (unlike mlp) may read any names."""
    return load_spec({"name": "s", "workload": "tests.workloads:noop", "params": params, **keys})


INT = {"type": "int", "low": 1, "high": 100_000}
INTS = ("depth", "width", "train_size")  # int hyperparameters of the built-in mlp


# ---------------------------------------------------------------------- 6. grids counted, not built

@pytest.mark.parametrize("conditional", [False, True], ids=["product", "conditional"])
def test_a_grid_of_10_15_points_is_refused_by_its_size(tmp_path: Path, conditional: bool) -> None:
    params = "".join(f"  {n}: {{type: int, low: 1, high: 100000}}\n" for n in INTS)
    if conditional:  # the big branch under sgd, a small one under adam: 10**15 + 3 points
        params = ("  optimizer: {type: categorical, choices: [sgd, adam]}\n"
                  + params.replace("}\n", ", when: {optimizer: sgd}}\n"))
        params += "  kernel_size: {type: int, low: 1, high: 3, when: {optimizer: adam}}\n"
    write(tmp_path, BASE + "strategy: grid\nparams:\n" + params)
    stderr = assert_refused(tuner_cli(tmp_path, "launch", "space.yaml"), tmp_path)
    size = "1,000,000,000,000,003" if conditional else "1,000,000,000,000,000"
    assert (
        f"space.yaml: params: strategy `grid` queues every point of the grid, so it must have at most 100,000 "
        f"points, but got {size} (depth: 100,000 values, width: 100,000 values, train_size: 100,000 values). "
        "Fix: list fewer "
        "points with `values: [...]` (or a larger `step` on an int), or use strategy random or tpe."
    ) in stderr


def test_the_grid_cap_holds_for_a_strategy_flag_too(tmp_path: Path) -> None:
    write(tmp_path, BASE + "strategy: tpe\nparams:\n" + "".join(f"  {n}: {INT}\n" for n in INTS))
    stderr = assert_refused(tuner_cli(tmp_path, "launch", "space.yaml", "--strategy", "grid"), tmp_path)
    assert "but got 1,000,000,000,000,000 (depth: 100,000 values" in stderr


@pytest.mark.parametrize("params", [
    {"opt": {"type": "categorical", "choices": ["sgd", "adam", "rms"]},
     "m": {"type": "int", "low": 0, "high": 4, "when": {"opt": "sgd"}},
     "nesterov": {"type": "categorical", "choices": [True, False], "when": {"opt": "sgd"}},
     "damp": {"type": "int", "low": 1, "high": 3, "when": {"nesterov": False}},
     "beta": {"type": "float", "low": 0.0, "high": 1.0, "values": [0.9, 0.99, 0.9], "when": {"opt": "adam"}},
     "width": {"type": "int", "low": 8, "high": 64, "step": 8}},
    {"a": {"type": "categorical", "choices": ["x", "y"]},
     "b": {"type": "categorical", "choices": ["x", "y"]},
     "both": {"type": "int", "low": 1, "high": 5, "when": {"a": "x", "b": "y"}},
     "only_a": {"type": "int", "low": 1, "high": 2, "when": {"a": "y"}}},
], ids=["nested conditions", "two conditions"])
def test_grid_size_counts_what_grid_points_lists(params: dict[str, Any]) -> None:
    s = space(params, strategy="grid")
    points = strategies.grid_points(s)
    assert strategies.grid_size(s) == len(points) == len({strategies.point_key(p) for p in points})
    assert strategies.planned_trials(s) == len(points)


def test_auto_counts_a_conditional_grid_exactly() -> None:
    # The full product is 2 x 100 x 200 = 40,000, the grid itself 300 points: a budget of 300 covers it.
    s = space({
        "opt": {"type": "categorical", "choices": ["sgd", "adam"]},
        "m": {"type": "int", "low": 1, "high": 100, "when": {"opt": "sgd"}},
        "w": {"type": "int", "low": 1, "high": 200, "when": {"opt": "adam"}},
    }, trials=300)
    assert strategies.profile(s).grid_size == 300
    assert strategies.resolved(s) == "grid"
    assert strategies.describe(s).startswith("auto → grid search (300 points over")


def test_auto_never_resolves_to_a_grid_past_the_cap() -> None:
    s = space({n: INT for n in "abc"}, trials=10**16)  # a budget that covers all 10**15 points
    assert strategies.profile(s).grid_size == 10**15
    assert strategies.resolved(s) == "tpe"
    assert strategies.planned_trials(s) == 10**16


# ---------------------------------------------------------------------- 7. alias bombs, long values

BOMB = BASE + "fixed:\n  a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"  {n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdefgh", "bcdefghi")
) + "params:\n" + LR


def test_an_alias_bomb_is_refused_in_a_few_lines(tmp_path: Path) -> None:
    write(tmp_path, BOMB)
    assert len(BOMB) < 600
    proc = tuner_cli(tmp_path, "launch", "space.yaml")
    stderr = assert_refused(proc, tmp_path)
    assert len(proc.stdout + proc.stderr) < 2000
    # Line 9 (e: 10**5 x's in 11,111 lists) is the first anchor whose expansion passes the cap.
    assert (
        "space.yaml: line 9: a spec must hold at most 100,000 values once its aliases (*name) are expanded, "
        "but the value that starts here holds more. Fix: list fewer values, or repeat fewer anchors"
    ) in stderr


def test_an_anchor_that_contains_itself(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "fixed:\n  a: &a [1, *a]\nparams:\n" + LR)
    with pytest.raises(SpecError, match=r"space\.yaml: line 5: an anchor must not contain an alias to itself"):
        load_spec(path)


def test_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "params:\n  lr: &f {type: float, low: 0.1, high: 1.0}\n"
                                  "  weight_decay: {<<: *f, high: 0.5}\n  dropout: *f\n")
    loaded = load_spec(path)
    assert (loaded.params["weight_decay"].low, loaded.params["weight_decay"].high,
            loaded.params["dropout"].high) == (0.1, 0.5, 1.0)


@pytest.mark.parametrize(("raw", "start"), [
    ({"fixed": {"hidden": list(range(10**6))}}, "fixed.hidden: must be a single value"),
    ({"strategy": "t" * 10**6}, "`strategy` must be one of"),
    ({"name": "my study " * 10**4}, "`name` must start with"),
    ({"fixed": {"x": {"deep": [[[[[[["v"]]]]]]] * 1000}}}, "fixed.x: must be a single value"),
], ids=["long list", "long string", "long name", "deep value"])
def test_every_echoed_value_is_cut_short(raw: dict[str, Any], start: str) -> None:
    base = {"name": "s", "workload": "mlp", "data": "wine", "params": {"lr": {"type": "float", "low": 0.1, "high": 1}}}
    with pytest.raises(SpecError) as info:
        load_spec({**base, **raw})
    message = str(info.value)
    assert message.startswith(f"<spec>: {start}")
    assert len(message) < 500, message
    assert "…" in message or "..." in message


def test_a_thousand_problems_are_counted_not_listed() -> None:
    with pytest.raises(SpecError, match=r"^<spec>: 26 problems\n") as info:
        space({"c": {"type": "categorical", "choices": [[i] for i in range(1000)]}})
    assert info.value.problems[-1] == "... and 975 more. Fix: correct the ones above, then run again."


# ---------------------------------------------------------------------- 8. repeated choices, linearly


@pytest.mark.timeout(5)  # the pairwise check took 12 s on 20,000 choices
def test_twenty_thousand_choices_with_one_repeat() -> None:
    choices: list[Any] = [f"c{i}" for i in range(20_000)]
    choices[15_000] = "c123"
    with pytest.raises(SpecError, match=r"params\.c\.choices: `choices` must not repeat a value, but got 'c123' "
                                        r"more than once\. Fix: list each value once\."):
        space({"c": {"type": "categorical", "choices": choices}})


def test_equal_choices_of_different_types_are_one_choice() -> None:
    # Optuna finds a choice by equality, so 1 and true would be the same one.
    with pytest.raises(SpecError, match=r"but got 1 more than once"):
        space({"c": {"type": "categorical", "choices": [1, "one", True]}})


# ---------------------------------------------------------------------- 9. cycles and repeated keys


def test_a_when_cycle_is_named_with_its_line(tmp_path: Path) -> None:
    write(tmp_path, BASE + "params:\n" + LR +
          "  activation: {type: categorical, choices: [relu, tanh], when: {norm: none}}\n"
          "  norm: {type: categorical, choices: [none, layer], when: {activation: relu}}\n")
    stderr = assert_refused(tuner_cli(tmp_path, "launch", "space.yaml"), tmp_path)
    assert (
        "space.yaml: params.activation.when: conditions must not form a cycle (a param is decided after the "
        "params its `when` names), but got params.activation.when -> norm -> activation (line 6). Fix: remove "
        "the `when` of one of activation, norm."
    ) in stderr


def test_every_cycle_is_named() -> None:
    choice = {"type": "categorical", "choices": ["x", "y"]}
    with pytest.raises(SpecError, match=r"^<spec>: 2 problems") as info:
        space({"a": {**choice, "when": {"c": "x"}}, "b": {**choice, "when": {"a": "x"}},
               "c": {**choice, "when": {"b": "x"}}, "d": {**choice, "when": {"e": "x"}},
               "e": {**choice, "when": {"d": "x"}}, "f": {**choice, "when": {"a": "x"}}})
    assert [p.split(", but got ")[1].split(". Fix")[0] for p in info.value.problems] == [
        "params.a.when -> c -> b -> a", "params.d.when -> e -> d",
    ]


def test_a_param_listed_before_the_one_its_when_names_is_kept() -> None:
    s = space({
        "momentum": {"type": "float", "low": 0.0, "high": 0.9, "values": [0.0, 0.9], "when": {"opt": "sgd"}},
        "lr": {"type": "float", "low": 0.1, "high": 1.0, "values": [0.1]},
        "opt": {"type": "categorical", "choices": ["sgd", "adam"]},
    }, strategy="grid")
    assert list(s.params) == ["lr", "opt", "momentum"]
    assert sorted(map(str, strategies.grid_points(s))) == [
        "{'lr': 0.1, 'opt': 'adam'}",
        "{'lr': 0.1, 'opt': 'sgd', 'momentum': 0.0}",
        "{'lr': 0.1, 'opt': 'sgd', 'momentum': 0.9}",
    ]


def test_repeated_yaml_keys_name_both_lines(tmp_path: Path) -> None:
    write(tmp_path, BASE + "strategy: tpe\nparams:\n" + LR + "  lr: {type: float, low: 0.1, high: 1.0}\n"
                           "strategy: random\n")
    stderr = assert_refused(tuner_cli(tmp_path, "launch", "space.yaml"), tmp_path)
    assert "space.yaml: 2 problems" in stderr
    assert ("line 7: a key must appear once in a mapping, but params.lr was already given at line 6 (YAML would "
            "keep only this one). Fix: remove or merge one of them.") in stderr
    assert "line 8: a key must appear once in a mapping, but strategy was already given at line 4" in stderr


# ---------------------------------------------------------------------- 10. files and seeds


def _without_root_read_override() -> None:
    # Root reads any file; without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (dropped from the
    # bounding set, so the command exec'd next lacks them) it honours chmod 000 like any user.
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
    _capped_memory()


@pytest.mark.parametrize(("content", "message"), [
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "a spec file must be UTF-8 text, but byte 0 is 0x89"),
    (b"\x80\x81 workload: mlp\n", "a spec file must be UTF-8 text, but byte 0 is 0x80: this looks like a binary "
                                  "file or another encoding. Fix: name the YAML spec, or save it as UTF-8."),
    (b"workload: mlp\ndata: \x00\x01\n", "YAML text must not hold control characters, but got #x0000 at "
                                          "character 20: this is not a text file. Fix: name the YAML spec"),
], ids=["png", "latin-1", "control characters"])
def test_a_binary_file(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "space.yaml").write_bytes(content)
    stderr = assert_refused(tuner_cli(tmp_path, "launch", "space.yaml"), tmp_path)
    assert f"space.yaml: {message}" in stderr


def test_a_file_it_may_not_read(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "params:\n" + LR)
    path.chmod(0)
    preexec = _without_root_read_override if os.geteuid() == 0 else _capped_memory
    stderr = assert_refused(tuner_cli(tmp_path, "launch", "space.yaml", preexec=preexec), tmp_path)
    assert "space.yaml: cannot be read: Permission denied. Fix: check the file's permissions" in stderr


def test_a_file_too_large_to_be_a_spec(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    with path.open("wb") as file:
        file.truncate(64 * 2**20)  # sparse: costs no disk
    with pytest.raises(SpecError, match=r"model\.pt: a spec file must be at most 10 MiB, but this one is larger\."):
        load_spec(path)


def test_yaml_nested_past_what_python_reads(tmp_path: Path) -> None:
    path = write(tmp_path, "workload: mlp\nparams: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(SpecError, match=r"space\.yaml: the YAML nests lists or mappings deeper than Python can read"):
        load_spec(path)


def test_a_directory(tmp_path: Path) -> None:
    (tmp_path / "search_spaces").mkdir()
    stderr = assert_refused(tuner_cli(tmp_path, "launch", "search_spaces"), tmp_path)
    assert "search_spaces: is a directory, not a spec file. Fix: name a YAML file" in stderr


@pytest.mark.parametrize(("seed", "message"), [
    ("-1", "error: --seed: must be in 0..4294967295 (2**32 - 1, what NumPy and Optuna's samplers accept), but got -1. "
           "Fix: use a seed in that range, e.g. seed: 0."),
    (str(10**23), "error: --seed: must be in 0..4294967295 (2**32 - 1, what NumPy and Optuna's samplers accept), but got "
                  f"{10**23}."),
    ("1e23", "argument --seed: invalid int value: '1e23'"),
], ids=["negative", "past 2**32", "not an int"])
def test_a_seed_out_of_range_is_refused_before_anything_starts(tmp_path: Path, seed: str, message: str) -> None:
    write(tmp_path, BASE + "params:\n" + LR)
    stderr = assert_refused(tuner_cli(tmp_path, "launch", "space.yaml", "--seed", seed), tmp_path)
    assert message in stderr


def test_a_seed_from_the_file_or_the_api_is_checked_too(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "seed: 1.0e+23\nparams:\n" + LR)
    with pytest.raises(SpecError, match=r"`seed` must be in 0\.\.4294967295 .*but got 1e\+23\."):
        load_spec(path)
    with pytest.raises(SpecError, match=r"`seed` must be in 0\.\.4294967295 .*but got -5\."):
        load_spec(path, {"seed": -5})
