"""The one rule for output places, and outputs that appear together or not at all."""
from __future__ import annotations

import multiprocessing as mp
import os

import pytest

from exprengine.errors import UserError
from exprengine.files import atomic_directory, atomic_output, check_outputs_apart, check_writable_place, outputs_together


@pytest.fixture
def place(tmp_path):
    (tmp_path / "in.png").write_bytes(b"input")
    os.link(tmp_path / "in.png", tmp_path / "hard.png")
    (tmp_path / "soft.png").symlink_to(tmp_path / "in.png")
    (tmp_path / "engine").mkdir()
    (tmp_path / "engine" / "engine.json").write_text("{}")
    return tmp_path


@pytest.mark.parametrize("out, message", [
    ("in.png", "is the input"),
    ("hard.png", "is the input"),                  # same inode
    ("soft.png", "is the input"),                  # through a symbolic link
    ("./sub/../in.png", "is the input"),
    ("engine/engine.json", "inside the input directory"),
    ("engine/new.json", "inside the input directory"),
    ("engine", "is the input"),
    (".", "is a directory holding the input"),
])
def test_an_output_that_resolves_to_an_input_is_refused(place, out, message):
    (place / "sub").mkdir(exist_ok=True)
    inputs = {"IMAGE": place / "in.png", "--engine": place / "engine"}
    with pytest.raises(UserError, match=message) as e:
        check_outputs_apart({"--out": place / out}, inputs)
    assert "\n" not in str(e.value)
    assert (place / "in.png").read_bytes() == b"input"


def test_outputs_apart_from_each_other_and_missing_inputs_skipped(place):
    check_outputs_apart({"--out": place / "a.png", "--attention": place / "b.png"},
                        {"IMAGE": place / "in.png", "--engine": place / "missing"})
    with pytest.raises(UserError, match="name the same place"):
        check_outputs_apart({"--out": place / "a.png", "--attention": place / "./a.png"}, {})


def test_check_writable_place_applies_the_rule_and_the_name_limit(place):
    with pytest.raises(UserError, match="is the input"):
        check_writable_place(place / "hard.png", [place / "in.png"])
    with pytest.raises(UserError, match="longer than this file system's limit"):
        check_writable_place(place / ("x" * 300 + ".png"))


def test_outputs_together_appear_together_or_not_at_all(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("old a")
    with pytest.raises(RuntimeError):
        with outputs_together():
            with atomic_output(a) as tmp:
                tmp.write_text("new a")
            assert a.read_text() == "old a"            # not yet in place
            raise RuntimeError("the second output failed")
    assert a.read_text() == "old a" and not b.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]     # no temporaries left
    with outputs_together():
        with atomic_output(a) as tmp:
            tmp.write_text("new a")
        with atomic_directory(tmp_path / "d") as d:
            (d / "f").write_text("f")
            with atomic_output(d / "inner.txt") as t:    # inside a directory being written: at once
                t.write_text("inner")
        with atomic_output(b) as tmp:
            tmp.write_text("new b")
    assert a.read_text() == "new a" and b.read_text() == "new b"
    assert (tmp_path / "d" / "inner.txt").read_text() == "inner"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt", "d"]


def test_a_failed_install_puts_every_earlier_output_back(tmp_path, monkeypatch):
    import exprengine.files as files
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("old a")
    real = files._install

    def failing(item):
        if item.target == b:
            raise UserError("disk full")
        real(item)
    monkeypatch.setattr(files, "_install", failing)
    with pytest.raises(UserError):
        with outputs_together():
            for p in (a, b):
                with atomic_output(p) as tmp:
                    tmp.write_text("new")
    assert a.read_text() == "old a" and not b.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def _swap_many(target: str, worker: int, rounds: int, errors) -> None:
    try:
        for i in range(rounds):
            with atomic_directory(target) as tmp:
                (tmp / "who").write_text(f"{worker}.{i}")
    except Exception as e:  # noqa: BLE001 -- reported to the parent
        errors.put(f"{type(e).__name__}: {e}")


def test_concurrent_replacements_of_one_directory_are_safe(tmp_path):
    target = tmp_path / "engine"
    ctx = mp.get_context("fork")
    errors = ctx.Queue()
    procs = [ctx.Process(target=_swap_many, args=(str(target), w, 15, errors)) for w in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert not found, found[:3]
    assert [p.name for p in tmp_path.iterdir()] == ["engine"]           # no .old or .part folders
    assert sorted(p.name for p in target.iterdir()) == ["who"]


def test_a_signal_while_a_temporary_is_created_is_raised_after_its_clean_up_is_in_charge(tmp_path):
    """SIGTERM delivered inside temp_beside's creation (here: raised by hand while deferred)
    reaches the handler only when the block ends, inside the region that removes the temporary."""
    import signal

    import exprengine.files as files

    class Stop(BaseException):
        pass

    def stop(signum, frame):
        raise Stop(signum)
    old = signal.signal(signal.SIGTERM, stop)
    real_mkstemp = files.tempfile.mkstemp

    def signalled_mkstemp(*args, **kwargs):          # SIGTERM arrives while the file is created
        made = real_mkstemp(*args, **kwargs)
        signal.raise_signal(signal.SIGTERM)
        return made
    try:
        files.tempfile.mkstemp = signalled_mkstemp
        try:
            with pytest.raises(Stop):
                with files.temp_beside(tmp_path / "out.mp4", ".video.mp4"):
                    raise AssertionError("not reached: the deferred signal is raised first")
        finally:
            files.tempfile.mkstemp = real_mkstemp
        with pytest.raises(Stop):
            with files.signals_deferred():
                signal.raise_signal(signal.SIGTERM)
                created = tmp_path / "noted.txt"      # still runs: the signal only noted
                created.write_text("x")
        assert (tmp_path / "noted.txt").exists()
    finally:
        signal.signal(signal.SIGTERM, old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noted.txt"]
