"""Pieces of osqueue_core.table checked against what they stand for."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from osqueue_core import default_job_id
from osqueue_core.config import default_job_seq as id_seq
from osqueue_core.table import _default_id

_seqs = st.integers(0, 10**15) | st.sampled_from([0, 1, 10**11, 10**12, 10**12 - 1])
_epochs = st.integers(0, 10**8)
_near_ids = st.builds(
    lambda seq, epoch, edit: edit(default_job_id(epoch, seq)),
    _seqs,
    _epochs,
    st.sampled_from(
        [
            lambda i: i,
            lambda i: i + "0",
            lambda i: i.replace("-", "-0"),
            lambda i: i.replace("-", "--"),
            lambda i: i + "\u0663",  # an Arabic-Indic digit: int() reads it
            lambda i: i + "\u00b2",  # a digit to isdigit(), not to int()
            lambda i: "0" + i,
            lambda i: i[1:],
            lambda i: i.replace("-", "-+"),
            lambda i: i.rstrip("0123456789") + "x",
        ]
    ),
)


@settings(max_examples=500, deadline=None)
@given(job_id=_near_ids | st.text(alphabet="0123456789-\u0663\u00b2 x", max_size=20), seq=_seqs)
def test_default_id_says_what_id_seq_says(job_id: str, seq: int) -> None:
    assert _default_id(job_id, seq) == (id_seq(job_id) == seq)
    parsed = id_seq(job_id)
    if parsed is not None:
        assert _default_id(job_id, parsed)
