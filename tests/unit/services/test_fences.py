"""tcpd's fences: another channel's posted calls, counted, let a waiting call pass."""
from services.tcp import fences
from services.tcp.fences import Fences


def test_a_fence_passes_once_the_channel_s_posted_calls_are_handled():
    f = Fences()
    assert not f.passed(b"p1.a", 2)
    assert f.posted(b"p1.a", 7) is False           # nobody waits on socket 7
    f.wait(7)
    assert not f.passed(b"p1.a", 2)
    assert f.posted(b"p1.a", 7) is True            # the sleeper on 7 must look again ...
    assert f.passed(b"p1.a", 2)                    # ... and passes now
    assert f.posted(b"p1.a", 7) is False           # woken once, not at every later post
    assert f.passed(b"p1.b", 0) and not f.passed(b"p1.b", 1)      # channels are counted apart


def test_channels_beyond_the_limit_forget_the_oldest_half(monkeypatch):
    monkeypatch.setattr(fences, "CHANNELS_MAX", 4)
    f = Fences()
    for name in (b"a", b"b", b"c", b"d", b"e"):
        f.posted(name, 1)
    assert not f.passed(b"a", 1) and not f.passed(b"b", 1)       # forgotten: their fences time out
    assert f.passed(b"c", 1) and f.passed(b"e", 1)
