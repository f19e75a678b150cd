import pytest

from gmmmem import report


def test_claim_prints_one_line_when_it_holds(capsys):
    report.claim(1 + 1 == 2, "arithmetic holds")
    assert capsys.readouterr().out == "✓ arithmetic holds\n"


def test_claim_raises_when_it_fails(capsys):
    with pytest.raises(AssertionError, match="✗ no copies up to M = 60"):
        report.claim(False, "no copies up to M = 60")
    assert capsys.readouterr().out == ""


def test_markdown_table():
    text = report.markdown_table(["M", "ratio"], [[10, "0.00"], [100, "1.00"]])
    assert text.splitlines() == ["| M | ratio |", "|---|---|", "| 10 | 0.00 |", "| 100 | 1.00 |"]


def test_markdown_table_escapes_pipes_and_checks_widths():
    assert "a \\| b" in report.markdown_table(["x"], [["a | b"]])
    with pytest.raises(ValueError):
        report.markdown_table(["x", "y"], [[1]])
