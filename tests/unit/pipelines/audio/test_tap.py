import numpy as np

from pipelines.audio.tap import AGENT, CALLER, CallTimeline


def tone(seconds: float, rate: int = 24000, level: float = 0.5) -> np.ndarray:
    return np.full(round(seconds * rate), level, np.float32)


def test_nothing_before_the_caller_connects() -> None:
    tl = CallTimeline(hold=0.0)
    tl.place(AGENT, tone(1.0), 24000, at=10.0)
    assert tl.start is None
    assert tl.drain().shape == (0, 2)


def test_agent_lands_where_it_plays_and_a_dropped_queue_is_replaced() -> None:
    tl = CallTimeline(hold=0.0)
    tl.place(CALLER, tone(2.0, 16000, 0.1), 16000, at=0.0)
    tl.place(AGENT, tone(0.5, level=0.5), 24000, at=0.5)
    # the track dropped its queue at 0.75: what was queued after it was never heard
    tl.place(AGENT, tone(0.25, level=-0.5), 24000, at=0.75)
    out = tl.drain()
    assert abs(len(out) / 24000 - 2.0) < 0.01
    right = out[:, 1]
    assert np.all(right[: 12000 - 10] == 0.0)
    assert np.allclose(right[12000:18000], 0.5)
    assert np.allclose(right[18000:24000], -0.5)
    assert np.all(right[24000:] == 0.0)
    assert abs(float(out[100:47000, 0].mean()) - 0.1) < 0.01


def test_take_holds_back_the_last_hold_seconds() -> None:
    tl = CallTimeline(hold=0.5)
    tl.place(CALLER, tone(1.0), 24000, at=0.0)
    assert len(tl.take(now=1.0)) == 12000
    assert len(tl.drain()) == 12000
