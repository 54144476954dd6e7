"""The learner's workspace: ``%%exercise`` saves a piece, ``use_pieces`` reuses it or falls back."""

from __future__ import annotations

import pytest
import torch

from course_utils import learner
from course_utils.exercises import CheckTimeout, run_check, time_limit


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_FILL_SOLUTIONS", "0")
    monkeypatch.setenv(learner.LEARNER_DIR_ENV, str(tmp_path / "my_transformer"))
    return tmp_path / "my_transformer"


def write(workspace, piece, source):
    workspace.mkdir(parents=True, exist_ok=True)
    (workspace / f"{piece}.py").write_text(learner.PREAMBLE + source)


def test_save_piece_writes_in_learner_mode_only(workspace, monkeypatch):
    path = learner.save_piece("rope", "def apply_rope(x, positions, base=10000.0):\n    return x\n")
    assert path == workspace / "rope.py" and "def apply_rope" in path.read_text()
    monkeypatch.setenv("COURSE_FILL_SOLUTIONS", "1")
    assert learner.save_piece("masks", "x = 1") is None
    assert not (workspace / "masks.py").exists()


def test_unknown_piece_is_a_clear_error(workspace):
    with pytest.raises(learner.PieceError, match="expected one of bpe, rope"):
        learner.save_piece("ropes", "")


def test_magic_runs_the_cell_and_saves_it(workspace):
    from IPython.testing.globalipapp import get_ipython

    shell = get_ipython()
    learner.load_ipython_extension(shell)
    shell.run_cell("%%exercise masks\ndef causal_mask(n):\n    return torch.ones(n, n, dtype=torch.bool).tril()\n")
    assert shell.user_ns["causal_mask"](2).tolist() == [[True, False], [True, True]]
    assert "def causal_mask" in (workspace / "masks.py").read_text()


def test_stub_falls_back_to_the_reference(workspace):
    write(workspace, "rope", "def apply_rope(x, positions, base=10000.0):\n    raise NotImplementedError\n")
    namespace = {}
    status = learner.use_pieces(namespace, "rope", verbose=False)["rope"]
    assert not status.yours and status.reason == "not attempted"
    from course_utils.solutions import nb03

    assert namespace["apply_rope"] is nb03.apply_rope


def test_later_pieces_call_the_learners_earlier_ones(workspace):
    write(workspace, "rope", "def apply_rope(x, positions, base=10000.0):\n    return x * 0 + 7\n")
    write(workspace, "gqa", (
        "class GroupedQueryAttention(nn.Module):\n"
        "    def __init__(self, d_model, n_heads, n_kv_heads, rope_base=10000.0, bias=False):\n"
        "        super().__init__()\n"
        "    def forward(self, x, positions, mask=None, past_kv=None):\n"
        "        return apply_rope(x, positions), (x, x)\n"
    ))
    namespace = {}
    statuses = learner.use_pieces(namespace, "gqa", "rope", verbose=False)
    assert statuses["rope"].yours and statuses["gqa"].yours
    out, _ = namespace["GroupedQueryAttention"](8, 2, 1)(torch.zeros(1, 3, 8), torch.arange(3))
    assert torch.equal(out, torch.full((1, 3, 8), 7.0))


def test_a_crashing_piece_is_reported_and_replaced(workspace, capsys):
    write(workspace, "masks", "def causal_mask(n):\n    return 1 / 0\ndef padding_mask(m):\n    pass\n"
                              "def sliding_window_mask(n, w):\n    pass\n")
    status = learner.use_pieces({}, "masks")["masks"]
    assert not status.yours and "ZeroDivisionError" in status.reason
    assert "0 of 1 are yours" in capsys.readouterr().out


def test_unattended_runs_use_the_references(workspace, monkeypatch):
    write(workspace, "rope", "def apply_rope(x, positions, base=10000.0):\n    return x\n")
    monkeypatch.setenv("COURSE_FILL_SOLUTIONS", "1")
    status = learner.use_pieces({}, "rope", verbose=False)["rope"]
    assert not status.yours and "unattended" in status.reason


def test_time_limit_stops_a_python_loop():
    with pytest.raises(CheckTimeout), time_limit(0.2):
        while True:
            pass


def test_run_check_stops_a_runaway_learner_function(monkeypatch):
    monkeypatch.setenv("COURSE_FILL_SOLUTIONS", "0")

    def forever(x):
        while True:
            pass

    result = run_check("loop", forever, lambda x: x, [((1,), {})], lambda *a: None, timeout_s=0.2)
    assert not result.passed and "stopped after 0.2 s" in result.message
