import pytest

from fmnist.registry import Registry


def test_registry_refuses_duplicates_and_lists_names_on_unknown():
    registry = Registry("widget")
    registry.register("b")(lambda: 1)
    registry.register("a")(lambda: 2)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("a")(lambda: 3)
    with pytest.raises(KeyError, match="unknown widget 'c'; choose one of: a, b"):
        registry.get("c")
    assert registry.get("a")() == 2
