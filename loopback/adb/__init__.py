"""A loopback ADB device and private adb servers, for the tests and benchmarks.

``device``: ``LoopbackDevice``, an adbd look-alike on 127.0.0.1 (what ``adb connect
127.0.0.1:PORT`` talks to) whose shell and files are this machine's; ``transport`` its
connections and streams, ``protocol`` the wire formats, ``shell`` and ``sync`` its two
services, ``props`` its getprop values. ``server``: ``AdbServer``, the real adb binary on
a private port and HOME. ``fixtures``: the pytest fixtures of both.

References: AOSP packages/modules/adb protocol.txt, SYNC.TXT, shell_protocol.h and
file_sync_protocol.h.
"""
