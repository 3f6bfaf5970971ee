"""The one file globber (`fileio.expand_patterns`): its rules, one test each."""

import os

import pytest

from bert_jax import fileio


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    for name in ("b.txt", "a.txt", "d/c.txt", "d/e/f.txt", ".hidden.txt"):
        (tmp_path / name).write_text("x\n")
    return tmp_path


def rel(files, root):
    return [os.path.relpath(f, root) for f in files]


def test_sorted_per_pattern_in_the_order_given_and_a_directory_stands_for_its_files(tree):
    got = fileio.expand_patterns(f"{tree}/d, {tree}/*.txt")
    assert rel(got, tree) == ["d/c.txt", "d/e/f.txt", "a.txt", "b.txt"]   # no hidden file from '*'


def test_a_list_works_too_and_duplicates_are_kept_once(tree):
    got = fileio.expand_patterns([f"{tree}/a.txt", f"{tree}/*.txt", ""])
    assert rel(got, tree) == ["a.txt", "b.txt"]


def test_recursive_double_star_and_home(tree, monkeypatch):
    assert rel(fileio.expand_patterns(f"{tree}/**/*.txt"), tree) == ["a.txt", "b.txt", "d/c.txt", "d/e/f.txt"]
    monkeypatch.setenv("HOME", str(tree))
    assert fileio.expand_patterns("~/a.txt") == [str(tree / "a.txt")]


def test_a_pattern_matching_nothing_is_named(tree):
    with pytest.raises(ValueError, match=r"^train_files='.*/nothing-\*' matches no files; pass TFRecords$"):
        fileio.expand_patterns(f"{tree}/*.txt,{tree}/nothing-*", "train_files", hint="pass TFRecords")
    with pytest.raises(ValueError, match="input files is empty"):
        fileio.expand_patterns(" , ")
