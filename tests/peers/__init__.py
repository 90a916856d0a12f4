"""The peers the tests talk to: servers on loopback, in threads or child processes.

One module per kind of peer:

* `tcp`: `Server` (a thread per connection runs the test's own handler),
  `Blackhole` (connects never complete) and `echo`.
* `tls`: trustme contexts, stdlib TLS handlers, and a recording server side.
* `faults`: peers that misbehave on cue (a record cut in half, a reset, a FIN
  without close_notify) and the harness of the fault tests.
* `hostile`: the security tests' peers, which answer with anything but TLS.
* `properties`: the property tests' echo and send-back servers.
* `load/`: the echo and soak peers, in a process of their own.
* `child_scripts/`: the programs the process tests run in a fresh interpreter.
* `real_servers`, `proxies`, `nginx`: PostgreSQL, aiosmtpd, the proxies and
  nginx, started as child processes by session-scoped fixtures.

Child processes import these modules before pysock, so this package imports
nothing.
"""
