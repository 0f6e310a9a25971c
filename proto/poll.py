"""poll(2)'s event bits, Linux's values: what the engines' poll masks (tcp_poll, udp_poll) say,
what services tell libsock, and what libsock's descriptors show (select's read set is
IN|HUP|ERR, its write set OUT|ERR)."""

POLLIN, POLLPRI, POLLOUT, POLLERR, POLLHUP, POLLNVAL, POLLRDHUP = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x2000
