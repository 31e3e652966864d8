"""Per-example correctness survives the trip through its text form, and refuses what is not one."""

import numpy as np
import pytest

from granet_cli.store.examples import pack, unpack


@pytest.mark.parametrize("n", [1, 7, 8, 9, 450, 10_000])
def test_round_trip_keeps_every_bit(n):
    bits = np.random.default_rng(n).random(n) < 0.9
    text = pack(bits)
    assert text.startswith(f"{n}:") and len(text) < n // 6 + 20  # a bit per example, base64
    back = unpack(text)
    assert back.dtype == bool and back.shape == (n,) and (back == bits).all()


@pytest.mark.parametrize("bad", ["", "12", "x:AAAA", "9:A", "9:AAAAAAAA", "3:!!!!"])
def test_malformed_text_is_a_value_error(bad):
    with pytest.raises(ValueError):
        unpack(bad)
