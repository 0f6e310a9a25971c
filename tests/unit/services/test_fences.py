"""tcpd's fences and channels: another channel's posted calls let a waiting call pass; each
channel's messages are handled once and in order, across a tcpd restart."""
from services.tcp import channels as channels_module
from services.tcp.channels import AGAIN, GAP, NEXT, Channels
from services.tcp.fences import Fences


def test_a_fence_passes_once_the_channel_s_posted_calls_are_handled():
    ch = Channels()
    f = Fences(ch.handled)
    ch.admit(b"p1.a", 1)
    assert not f.passed(b"p1.a", 2)
    assert f.posted(7) is False                    # nobody waits on socket 7
    f.wait(7)
    assert not f.passed(b"p1.a", 2)
    assert ch.admit(b"p1.a", 2) == NEXT
    assert f.posted(7) is True                     # the sleeper on 7 must look again ...
    assert f.passed(b"p1.a", 2)                    # ... and passes now
    assert f.posted(7) is False                    # woken once, not at every later post
    assert f.passed(b"p1.b", 0) and not f.passed(b"p1.b", 1)      # channels are counted apart


def test_a_channel_s_messages_are_handled_in_order_and_once():
    notes = []
    ch = Channels(lambda identity, kind, value: notes.append((identity, kind, value)))
    assert ch.admit(b"c", 5) == NEXT               # first heard of: starts where it is
    assert ch.admit(b"c", 6) == NEXT
    assert ch.admit(b"c", 6) == AGAIN and ch.admit(b"c", 3) == AGAIN     # copies
    assert ch.admit(b"c", 8) == GAP                # 7 was lost: 8 waits for it to come again
    assert ch.handled(b"c") == 6
    ch.asleep(b"c", 6, 100)
    ch.answered(b"c", 6, 0, 300, None)
    assert ch.states[b"c"].progress is None and ch.states[b"c"].answer == (6, 0, 300, None)
    assert (b"c", "last", 6) in notes and (b"c", "progress", (6, 100)) in notes
    again = Channels()                             # a new tcpd, from what the store kept
    for identity, kind, value in notes:
        again.restore(identity, kind, value)
    assert again.admit(b"c", 6) == AGAIN and again.admit(b"c", 7) == NEXT


def test_channels_beyond_the_limit_forget_the_oldest_half(monkeypatch):
    monkeypatch.setattr(channels_module, "CHANNELS_MAX", 4)
    ch = Channels()
    for name in (b"a", b"b", b"c", b"d", b"e"):
        ch.admit(name, 1)
    assert ch.handled(b"a") == 0 and ch.handled(b"b") == 0       # forgotten: their fences time out
    assert ch.handled(b"c") == 1 and ch.handled(b"e") == 1
