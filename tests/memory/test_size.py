"""Budgets and headrooms read in any unit; a bad one names its field."""

import pytest

from ows.memory.size import parse_budget


@pytest.mark.parametrize("text, expected", [("16GiB", 16 * 2**30), ("15.5 GB", int(15.5e9)), ("12000MiB", 12000 * 2**20),
                                            ("9", 9 * 2**30)])
def test_budgets_are_read_in_any_unit(text, expected):
    assert parse_budget(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-3GiB", "16 GiBs", "0"])
def test_a_bad_budget_names_the_field(text):
    with pytest.raises(ValueError, match=f"max_memory={text!r} is invalid"):
        parse_budget(text)


@pytest.mark.parametrize("text", ["0", "0GiB", "0.0 MiB"])
def test_a_headroom_of_zero_is_read_in_any_unit_and_a_budget_of_zero_is_not(text):
    assert parse_budget(text, "memory_headroom", zero=True) == 0
    with pytest.raises(ValueError, match="give a positive size"):
        parse_budget(text)
    with pytest.raises(ValueError, match=r"memory_headroom='-1GiB' is invalid: give a size of 0 or more"):
        parse_budget("-1GiB", "memory_headroom", zero=True)
