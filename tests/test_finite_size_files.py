"""The committed files of chapter 6 read back typed, and are what their runs' writers write."""

import json

import pytest

from gmmmem import finite_size
from gmmmem.heldout import HeldOut


@pytest.fixture(scope="module")
def check():
    return finite_size.load_check()


@pytest.fixture(scope="module")
def evaluations():
    return finite_size.load_heldout()


def test_the_committed_check_loads_typed(check):
    assert len(check.rows) == 43 and check.seed == 0
    for r in check.rows:
        assert isinstance(r.d, int) and isinstance(r.var, float) and r.M.dtype.kind == "i"
        assert r.M.shape == r.mc_mean.shape == r.mc_stderr.shape == r.formula.shape == (13,)
        assert (r.mc_stderr > 0).all() and r.num_sets in (1500, 4000)
    r = check.row(30, 3, 50, 1.0)
    assert r.key == (30, 3, 50, 1.0) and r.M[0] == 1 and r.M[-1] == 48
    with pytest.raises(KeyError, match="no row"):
        check.row(30, 3, 51, 1.0)


def test_check_rows_write_back_what_was_read(check):
    """CheckRow.to_dict, which runs/finite_size_check.py writes with, gives the committed rows."""
    committed = json.loads(finite_size.default_check().read_text())["rows"]
    assert [r.to_dict() for r in check.rows] == committed


def test_the_committed_heldout_file_loads_typed(evaluations, check):
    names = ["closed form (c = 2)", "finite size", "Monte Carlo losses",
             "finite-size Theorem 3.2, measured generalizing excess"]
    assert list(evaluations.evaluations) == list(evaluations.fits) == names
    assert evaluations.measured.shape == (14,)
    for name in names:
        by_split = evaluations.evaluations[name]
        assert list(by_split) == ["random 75/25", "leave one N out", "fit on variance 1"]
        assert all(isinstance(ev, HeldOut) for ev in by_split.values())
        assert by_split["random 75/25"].n_splits == 40 and by_split["fit on variance 1"].n_splits == 1
        fit = evaluations.fits[name]
        assert fit.predictions.shape == (14,) and fit.weights.ndim == 1 and fit.train_mse > 0
    assert evaluations.settings["random_splits"] == 40


def test_heldout_rows_write_back_what_was_read(evaluations):
    """FitOnAll.to_dict and evaluation_dict, which runs/finite_size_heldout.py writes with,
    give the committed entries (summaries recomputed from the per-split errors)."""
    committed = json.loads(finite_size.default_heldout().read_text())["predictors"]
    for name, row in committed.items():
        written = {"all": evaluations.fits[name].to_dict(),
                   **{s: finite_size.evaluation_dict(ev) for s, ev in evaluations.evaluations[name].items()}}
        written["all"]["effective_dof"] = row["all"]["effective_dof"]  # stored as the int it was
        assert json.dumps(written) == json.dumps(row)


def test_wrong_files_are_named(tmp_path):
    with pytest.raises(ValueError, match="no finite_size_check file"):
        finite_size.load_check(tmp_path / "absent.json")
    with pytest.raises(ValueError, match="is not a finite_size_check file: its experiment is 'finite_size_heldout'"):
        finite_size.load_check(finite_size.default_heldout())
    with pytest.raises(ValueError, match="is not a finite_size_heldout file: its experiment"):
        finite_size.load_heldout(finite_size.default_check())
    (tmp_path / "x.json").write_text("[1, 2")
    with pytest.raises(ValueError, match="x.json is not a finite_size_check file: not JSON"):
        finite_size.load_check(tmp_path / "x.json")
    payload = json.loads(finite_size.default_check().read_text())
    payload["rows"][3]["formula"] = payload["rows"][3]["formula"][:-1]
    (tmp_path / "short.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="malformed .*differ in shape"):
        finite_size.load_check(tmp_path / "short.json")
    payload = json.loads(finite_size.default_heldout().read_text())
    del payload["predictors"]["finite size"]["all"]
    (tmp_path / "h.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="h.json is not a finite_size_heldout file: malformed"):
        finite_size.load_heldout(tmp_path / "h.json")
