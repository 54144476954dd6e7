"""Network guard: with COURSE_NETGUARD=1, refuse every non-loopback connection.

Put this folder on PYTHONPATH (``task run`` and ``task test`` do) and every Python process
started below it, notebook kernels included, gets the guard at interpreter start-up. The
course's default path must never touch the network; if something tries, it fails loudly
with the address it wanted instead of silently working on a machine that happens to be
online.
"""

import os

if os.environ.get("COURSE_NETGUARD") == "1":
    import ipaddress
    import socket

    class NetworkBlockedError(ConnectionRefusedError):
        """Raised for a connection to anything but this machine."""

    def _is_local(address) -> bool:
        if not isinstance(address, tuple):  # AF_UNIX path or abstract socket
            return True
        host = address[0]
        if host in ("localhost", ""):
            return True
        try:
            return ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:  # a host name: resolving it would already be network access
            return False

    def _check(address) -> None:
        if not _is_local(address):
            raise NetworkBlockedError(
                f"network access blocked by the course netguard (COURSE_NETGUARD=1): "
                f"connection to {address!r} refused"
            )

    _connect = socket.socket.connect
    _connect_ex = socket.socket.connect_ex
    _getaddrinfo = socket.getaddrinfo

    def connect(self, address):
        _check(address)
        return _connect(self, address)

    def connect_ex(self, address):
        _check(address)
        return _connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in (None, "localhost") and not _is_local((host, 0)):
            raise NetworkBlockedError(
                f"network access blocked by the course netguard: DNS lookup of {host!r} refused"
            )
        return _getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.getaddrinfo = getaddrinfo
    socket.NetworkBlockedError = NetworkBlockedError
