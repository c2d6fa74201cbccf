"""check_accuracy opens models given as openers one at a time (two OpenVINO models side by side corrupted a heap)."""

from __future__ import annotations

import gc
import weakref

import dfine.deploy.accuracy as accuracy
from dfine.deploy.backend import Backend
from dfine.deploy.metadata import ModelMetadata


class _Stub(Backend):
    name = "stub"

    def __init__(self, ap: float) -> None:
        super().__init__(ModelMetadata.for_classes(2, 64))
        self.ap = ap

    def _run(self, images, orig_target_sizes):
        raise AssertionError("not called: evaluate_backend is replaced")


def test_openers_are_opened_in_turn_and_released(monkeypatch):
    alive: list[weakref.ref] = []
    seen_alive_at_open: list[int] = []

    def opener(ap: float):
        def open_stub() -> _Stub:
            gc.collect()
            seen_alive_at_open.append(sum(ref() is not None for ref in alive))
            stub = _Stub(ap)
            alive.append(weakref.ref(stub))
            return stub

        return open_stub

    def fake_evaluate(backend, dataset, max_images=None):
        return type("Result", (), {"stats": {"AP": backend.ap, "AP50": backend.ap}})()

    monkeypatch.setattr(accuracy, "evaluate_backend", fake_evaluate)
    check = accuracy.check_accuracy(opener(0.60), opener(0.595), dataset=[0] * 10, max_ap_drop=1.0)
    assert seen_alive_at_open == [0, 0]  # the fp32 model was gone before the INT8 one was opened
    assert all(ref() is None for ref in alive)
    assert check.passed and abs(check.drop - 0.5) < 1e-9
    opened = _Stub(0.5)  # a backend object is scored as it is and stays the caller's
    assert accuracy.check_accuracy(opened, opener(0.3), dataset=[0] * 10).passed is False
    assert opened.ap == 0.5
