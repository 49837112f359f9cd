"""Leaves of what a model returns (:mod:`xgrad.frameworks.capture`): ``replace_leaf``, which
every framework's capture uses to hand a module's output back with its tapped leaf, rebuilds
each container the way ``leaf_paths`` walks it and never changes the one it is given."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import NamedTuple

import pytest

from xgrad.frameworks.capture import leaf_paths, replace_leaf


class Leaf:
    """Anything with a shape is a leaf."""

    shape = (2,)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


class Pair(NamedTuple):
    hidden: object
    cell: object


@dataclasses.dataclass
class Output:
    logits: object
    hidden: tuple = ()


@dataclasses.dataclass
class ModelOutput(OrderedDict):
    """Like ``transformers``' ``ModelOutput``: a dataclass that is also an ordered dict."""

    logits: object = None
    past: object = None

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if getattr(self, f.name) is not None:
                self[f.name] = getattr(self, f.name)


CASES = {
    "leaf": Leaf("a"),
    "tuple": (Leaf("a"), [Leaf("b"), Leaf("c")]),
    "dict": {"logits": Leaf("a"), "aux": (Leaf("b"), Leaf("c"))},
    "namedtuple": Pair(Leaf("a"), Leaf("b")),
    "dataclass": Output(Leaf("a"), (Leaf("b"), Leaf("c"))),
    "model-output": ModelOutput(logits=Leaf("a"), past=(Leaf("b"), Leaf("c"))),
}


@pytest.mark.parametrize("tree", CASES.values(), ids=CASES.keys())
def test_each_leaf_is_replaced_in_a_rebuilt_container_of_the_same_type(tree):
    before = leaf_paths(tree)
    for path, _ in before:
        new = replace_leaf(tree, path, Leaf("new"))
        assert type(new) is type(tree)
        got = leaf_paths(new)
        assert [p for p, _ in got] == [p for p, _ in before]
        for (p, leaf), (_, old) in zip(got, before, strict=True):
            assert leaf.name == ("new" if p == path else old.name)
    assert leaf_paths(tree) == before  # the given tree is never changed


def test_a_mapping_that_cannot_be_rebuilt_from_its_items_becomes_a_dict():
    class Strict(dict):
        def __init__(self, *, required):
            super().__init__(required=required)

    new = replace_leaf(Strict(required=Leaf("a")), "required", Leaf("b"))
    assert type(new) is dict and new["required"].name == "b"


def test_a_path_naming_no_leaf_leaves_the_tree_as_it_is():
    tree = {"logits": Leaf("a")}
    assert replace_leaf(tree, "other", Leaf("b"))["logits"].name == "a"
