"""Retention, agreement and the parity decision: golden values computed by hand."""

import math

import numpy as np
import pytest

from edgekd.metrics import retention, top1_agreement, wilson_interval
from edgekd.parity import measure_parity, parity_failure
from edgekd.types import Measurement


def test_retention_is_a_ratio_and_none_when_the_teacher_is_unknown():
    assert retention(0.95, 0.98) == pytest.approx(0.969387755)
    assert retention(0.9, None) is None and retention(0.9, 0.0) is None


def test_top1_agreement():
    assert top1_agreement(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4])) == 0.75
    with pytest.raises(ValueError):
        top1_agreement(np.array([1, 2]), np.array([[1, 2]]))


def test_wilson_interval_closed_forms():
    z2 = 1.959964 ** 2
    lo, hi = wilson_interval(0, 10)  # no successes: [0, z^2 / (n + z^2)]
    assert lo == 0 and hi == pytest.approx(z2 / (10 + z2))
    lo, hi = wilson_interval(10, 10)  # all successes: [n / (n + z^2), 1]
    assert lo == pytest.approx(10 / (10 + z2)) and hi == 1
    lo, hi = wilson_interval(50, 100)  # symmetric about 1/2, half-width z*sqrt(n/4 + z^2/4) / (n + z^2)
    assert (lo + hi) / 2 == pytest.approx(0.5)
    assert (hi - lo) / 2 == pytest.approx(1.959964 * math.sqrt(25 + z2 / 4) / (100 + z2))


def _outputs(n: int, flips: int) -> tuple[np.ndarray, np.ndarray]:
    ref = np.tile(np.array([[0.9, 0.1]]), (n, 1))
    out = ref.copy()
    out[:flips] = [0.1, 0.9]
    return ref, out


@pytest.mark.parametrize("n, flips, required, fails", [
    (1000, 15, 0.99, False),  # 0.985 observed; the interval (0.975..0.991) reaches 0.99: unlucky, kept
    (1000, 25, 0.99, True),  # 0.975: the whole interval (0.963..0.983) lies below 0.99: wrong, dropped
    (1000, 1, 1.0, True),  # fp32 must agree on every input
    (1000, 0, 1.0, False),
])
def test_a_file_is_dropped_only_when_its_whole_interval_misses(n, flips, required, fails):
    p = measure_parity(*_outputs(n, flips))
    assert p.top1_ci95[0] <= p.top1_agreement <= p.top1_ci95[1]
    assert (parity_failure(p, required) is not None) == fails


def test_nan_outputs_always_fail():
    ref, out = _outputs(10, 0)
    out[0, 0] = np.nan
    assert parity_failure(measure_parity(ref, out), 0.5, max_abs_diff=1e-3) is not None


def test_measurement_rows_round_trip_and_bad_rows_name_the_field():
    from edgekd.errors import InputError

    m = Measurement(model="s", artifact="s.onnx", format="onnx", quant="fp32", kind="measured",
                    runner="onnxruntime", retention=None, fallback_ops=({"op": "x"},))
    assert Measurement.from_dict(m.to_dict()) == m and m.where == "onnxruntime"
    with pytest.raises(InputError, match="lacks field 'model'"):
        Measurement.from_dict({}, "b/bench.json: rows[0]")
    with pytest.raises(InputError, match="'kind'"):
        Measurement.from_dict({**m.to_dict(), "kind": "guessed"})
