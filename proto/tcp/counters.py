"""Every counter of the TCP engine, declared once (`netstack stats` shows them under tcpd).

Counting a name not declared here is a bug of ours: `Counters` raises KeyError
for it (the engine's tests run strict, so a typo fails a test).
"""
from __future__ import annotations

# Linux's TCP MIB (RFC 4022) and TcpExt counterparts
MIB = (
    "active_opens", "passive_opens", "attempt_fails", "estab_resets", "in_segs", "out_segs",
    "retrans_segs", "in_errs", "out_rsts", "listen_drops", "listen_overflows", "challenge_acks",
    "delayed_acks", "fast_retransmits", "rto_expiries", "timeouts", "window_probes",
    "keepalive_probes", "keepalive_timeouts", "abort_on_close", "abort_on_linger", "abort_on_data",
    "window_updates",
)
# what the engine did, worth seeing
EVENTS = (
    "posted_send_dropped", "challenge_acks_limited", "duplicate_segments", "ofo_segments",
    "rst_challenged", "sack_lost_retransmits", "sack_recoveries", "sack_retransmits",
    "rack_marked_lost", "rack_reo_timeouts", "rack_reordering_seen",                        # RACK (rack.py)
    "syn_retransmit_answered", "time_wait_acks", "time_wait_recycled", "tlp_probes",
    "timer_bad_key", "timer_internal_error", "timer_stale", "acks_after_read", "acks_for_waiting_reader",
    "syncookies_sent", "syncookies_recv", "syncookies_failed",      # Linux SyncookiesSent/Recv/Failed
)
# segments dropped, by reason
DROPS = (
    "drop_ack_too_old", "drop_ack_unsent", "drop_beyond_window", "drop_data_after_fin",
    "drop_internal_error", "drop_listen_ack", "drop_listen_no_syn", "drop_listen_rst", "drop_no_ack",
    "drop_no_socket", "drop_not_local", "drop_orphan_child", "drop_outside_window", "drop_port_zero",
    "drop_rst_outside_window", "drop_syn_in_window", "drop_syn_outside_window", "drop_syn_queue_full",
    "drop_syn_rcvd_bad_ack", "drop_syn_sent_bad_ack", "drop_syn_sent_no_syn",
    "drop_syn_sent_rst_no_ack", "drop_time_wait_rst", "drop_paws", "drop_mem_pressure",
)
# levels, not counts
GAUGES = ("mem_held",)
NAMES = MIB + EVENTS + DROPS + GAUGES


class Counters(dict):
    """name -> count, every declared name present from the start."""

    def __init__(self):
        super().__init__(dict.fromkeys(NAMES, 0))
