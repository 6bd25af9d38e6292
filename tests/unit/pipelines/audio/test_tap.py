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


def test_the_recording_ends_where_the_caller_hung_up() -> None:
    tl = CallTimeline(hold=0.0)
    tl.place(CALLER, tone(2.0), 24000, at=0.0)
    # the mixer went on playing (a queued goodbye, the bed) until the session closed
    tl.place(AGENT, tone(2.0, level=0.5), 24000, at=1.0)
    assert len(tl.take(now=3.0)) == 48000  # not past the caller's audio
    assert len(tl.drain()) == 0
    tl.place(CALLER, tone(0.5), 24000, at=2.0)
    out = tl.drain()
    assert len(out) == 12000 and np.allclose(out[:, 1], 0.5)


def test_late_caller_frames_add_no_time_and_a_pause_adds_its_silence() -> None:
    frame = tone(0.02)
    stalled = CallTimeline(hold=0.0)
    for i in range(50):
        stalled.place(CALLER, frame, 24000, at=i * 0.02)
    # the loop stalled 0.3 s: 15 frames arrive at once, then real time goes on
    for _ in range(50, 65):
        stalled.place(CALLER, frame, 24000, at=65 * 0.02)
    for i in range(65, 100):
        stalled.place(CALLER, frame, 24000, at=i * 0.02)
    assert abs(len(stalled.drain()) / 24000 - 2.0) <= 0.1  # within the slack

    paused = CallTimeline(hold=0.0)
    for i in range(50):
        paused.place(CALLER, frame, 24000, at=i * 0.02)
    for i in range(50, 100):  # no audio for 0.5 s, then real time
        paused.place(CALLER, frame, 24000, at=0.5 + i * 0.02)
    out = paused.drain()
    assert abs(len(out) / 24000 - 2.5) < 0.03
    assert np.all(out[round(1.05 * 24000) : round(1.45 * 24000), 0] == 0.0)


def test_frames_waiting_before_the_first_came_through_move_the_start_back() -> None:
    frame = tone(0.02, level=0.1)
    tl = CallTimeline(hold=0.0)
    tl.place(CALLER, frame, 24000, at=1.0)  # heard from 0.0, the first through at 1.0
    tl.place(AGENT, tone(0.2, level=0.5), 24000, at=1.5)
    for _ in range(1, 50):  # the backlog
        tl.place(CALLER, frame, 24000, at=1.0)
    for i in range(50, 100):
        tl.place(CALLER, frame, 24000, at=i * 0.02)
    assert tl.start is not None and abs(tl.start) < 0.006
    out = tl.drain()
    assert len(out) == 48000
    right = out[:, 1]
    assert np.all(right[: round(1.49 * 24000)] == 0.0)
    assert np.allclose(right[round(1.51 * 24000) : round(1.69 * 24000)], 0.5)


def test_a_burst_faster_than_real_time_after_start_up_is_dropped() -> None:
    frame = tone(0.02)
    tl = CallTimeline(hold=0.5)
    for i in range(100):
        tl.place(CALLER, frame, 24000, at=i * 0.02)
    assert len(tl.take(now=2.0)) == 36000
    for _ in range(25):  # the stream's end: half a second at once
        tl.place(CALLER, frame, 24000, at=2.0)
    assert tl.dropped >= 24 * 480
    assert abs((36000 + len(tl.drain())) / 24000 - 2.0) <= 0.03
