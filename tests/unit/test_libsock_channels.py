"""libsock's channels: when a call must first wait (fence) for what another channel posted."""
from __future__ import annotations


from libsock import _rpc


def _stack_with_two_channels():
    stack = _rpc.Stack("/nonexistent/netstack")
    calls = []
    stack.call = lambda op, sid, args, timeout, data=None: calls.append((op, sid, args)) or (None, None, 0)
    mine, other = _rpc._Channel(stack, None, b"p1.mine", "i"), _rpc._Channel(stack, None, b"p1.other", "i")
    stack._local.channel = mine
    return stack, calls, mine, other


def _mark(channel, count):
    channel.posts = max(channel.posts, count)
    return _rpc.Posted(channel, channel.identity, count)


def test_posts_of_this_thread_s_channel_need_no_fence():
    stack, calls, mine, _ = _stack_with_two_channels()
    assert stack.after_posts(["inc", 9], _mark(mine, 2)) is False        # in flight, but in order
    mine.handled = 2
    assert stack.after_posts(["inc", 9], _mark(mine, 2)) is True         # known handled: forget the mark
    assert calls == []


def test_posts_of_another_channel_are_fenced_until_known_handled():
    stack, calls, _, other = _stack_with_two_channels()
    assert stack.after_posts(["inc", 9], _mark(other, 3)) is True
    assert calls == [("fence", ["inc", 9], [b"p1.other", 3])]
    other.handled = 3
    assert stack.after_posts(["inc", 9], _mark(other, 3)) is True        # answered on it since: no fence
    assert len(calls) == 1


def test_a_channel_gone_with_its_thread_or_left_in_the_parent_is_fenced():
    stack, calls, mine, other = _stack_with_two_channels()
    mark = _mark(other, 1)
    del other                                                            # its thread ended
    assert stack.after_posts(["inc", 9], mark) is True and calls[-1][0] == "fence"
    mine.pid = -1                                                        # as seen in a forked child
    assert stack.after_posts(["inc", 9], _mark(mine, 1)) is True and len(calls) == 2
