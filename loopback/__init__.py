"""A phone farm on this machine, for the tests and the benchmarks: loopback ADB devices
(``adb``), real private adb servers, and farms of them whose tool runs are forked from a
LiteRT zygote (``farm``, ``litert_zygote``). Not part of the installed tool."""
