"""kind and hidden for accesses, from the loader phase, path rules and static closure."""

from __future__ import annotations

from tracer.recording.classify import Classifier, Closure, is_shared_object
from tracer.trace.model import AccessKind as K

O_DIRECTORY = 0o200000

CLOSURE = Closure("/lib64/ld-linux-x86-64.so.2",
                  frozenset({"/lib64/ld-linux-x86-64.so.2", "/etc/ld.so.cache",
                             "/lib/x86_64-linux-gnu/libc.so.6"}),
                  frozenset({"libc.so.6", "ld-linux-x86-64.so.2"}))


def _classifier() -> Classifier:
    return Classifier(closure_for=lambda exe: CLOSURE)


def test_shared_object_names() -> None:
    assert is_shared_object("/lib/libc.so.6") and is_shared_object("/x/libz.so")
    assert is_shared_object("/x/libfoo.so.1.2.3")
    assert not is_shared_object("/etc/ld.so.cache") and not is_shared_object("/x/so.txt")


def test_library_kind_depends_on_loader_phase() -> None:
    c = _classifier()
    assert c.kind("open", "/lib/x86_64-linux-gnu/libc.so.6", True) is K.STARTUP_LIBRARY
    assert c.kind("open", "/lib/x86_64-linux-gnu/libnss_systemd.so.2", False) is \
        K.DLOPEN_LIBRARY
    assert c.kind("open", "/lib/x86_64-linux-gnu/libz.so.1", False) is K.DLOPEN_LIBRARY


def test_rules_sockets_probes_execs() -> None:
    c = _classifier()
    assert c.kind("open", "/etc/nsswitch.conf", False) is K.CONFIG
    assert c.kind("connect", "/var/run/nscd/socket", False) is K.SOCKET
    assert c.kind("connect", "127.0.0.1:53", False) is K.SOCKET
    assert c.kind("probe", "/home/x/file", False) is K.PROBE
    assert c.kind("open", "/", False, O_DIRECTORY) is K.PROBE
    assert c.kind("exec", "/bin/true", False) is K.EXECUTABLE
    assert c.kind("open", "/proc/self/maps", False) is K.RUNTIME
    assert c.kind("open", "/home/x/data.bin", False) is K.OTHER


def test_hidden_rules() -> None:
    c = _classifier()
    exe = "/prog"
    assert not c.hidden(K.STARTUP_LIBRARY, "/lib/x86_64-linux-gnu/libc.so.6", "ok", True, exe)
    # a glibc-hwcaps search probe that failed during loading is not a dependency
    assert not c.hidden(K.STARTUP_LIBRARY, "/lib/glibc-hwcaps/x86-64-v3/libc.so.6", "ENOENT",
                        True, exe)
    # an LD_PRELOAD'ed library is not in the closure
    assert c.hidden(K.STARTUP_LIBRARY, "/tmp/libpreload.so", "ok", True, exe)
    assert c.hidden(K.DLOPEN_LIBRARY, "/lib/x86_64-linux-gnu/libnss_systemd.so.2", "ok",
                    False, exe)
    assert c.hidden(K.CONFIG, "/etc/passwd", "ENOENT", False, exe)  # config: by definition
    assert not c.hidden(K.CONFIG, "/etc/ld.so.cache", "ok", False, exe)  # in the closure
    assert not c.hidden(K.RUNTIME, "/proc/self/maps", "ok", False, exe)
    assert not c.hidden(K.PROBE, "/", "ok", False, exe)
    assert c.hidden(K.OTHER, "/srv/data.bin", "ok", False, exe)
    assert not c.hidden(K.OTHER, "/srv/missing.bin", "ENOENT", False, exe)
    assert not c.hidden(K.EXECUTABLE, "/prog", "ok", False, exe, first_exec=True)
    assert c.hidden(K.EXECUTABLE, "/bin/true", "ok", False, exe)
    assert not c.hidden(K.INTERPRETER, "/lib64/ld-linux-x86-64.so.2", "ok", True, exe)
    assert c.hidden(K.INTERPRETER, "/lib/ld-musl-x86_64.so.1", "ok", True, exe)


def test_closure_from_static_facts_of_a_real_binary() -> None:
    from tracer.recording.classify import load_closure

    closure = load_closure("/bin/true")  # Debian: dynamic, glibc
    assert closure is not None and closure.interpreter == "/lib64/ld-linux-x86-64.so.2"
    assert "libc.so.6" in closure.names
    assert closure.accounts_for("/lib/x86_64-linux-gnu/libc.so.6")
    assert not closure.accounts_for("/lib/x86_64-linux-gnu/libnss_systemd.so.2")


def test_connect_is_a_socket_only_for_name_servers_and_nss_daemons() -> None:
    """An upstream (caddy's 127.0.0.1:8080), a database, a docker socket: the program's own
    traffic (`network`), never hidden; a name server of the resolv.conf in force and the
    nscd/userdb sockets are `socket`."""
    c = _classifier()  # no resolv.conf recorded: any port 53 is a name server
    assert c.kind("connect", "127.0.0.1:8080", False) is K.NETWORK
    assert c.kind("connect", "[::1]:53", False) is K.SOCKET
    assert c.kind("connect", "/run/docker.sock", False) is K.NETWORK
    assert c.kind("connect", "@/tmp/.X11-unix/X0", False) is K.NETWORK
    assert c.kind("connect", "/run/systemd/userdb/io.systemd.Multiplexer", False) is K.SOCKET
    assert not c.hidden(K.NETWORK, "127.0.0.1:8080", "EINPROGRESS", False, "/prog")
    named = Classifier(closure_for=lambda exe: CLOSURE, nameservers=("10.0.0.2", "fd00::1"))
    assert named.kind("connect", "10.0.0.2:53", False) is K.SOCKET
    assert named.kind("connect", "[fd00::1]:53", False) is K.SOCKET
    assert named.kind("connect", "[::ffff:10.0.0.2]:53", False) is K.SOCKET  # v4-mapped
    assert named.kind("connect", "127.0.0.1:53", False) is K.NETWORK  # a DNS proxy's upstream
    assert named.kind("connect", "10.0.0.2:5353", False) is K.NETWORK


def test_nameservers_as_glibc_and_go_read_them() -> None:
    from probes.knowledge import DEFAULT_NAMESERVERS, parse_nameservers

    text = ("# generated\nsearch example.test\nnameserver 10.0.0.2 # primary\n"
            "nameserver fe80::1%eth0\nnameserver not-an-address\n;nameserver 192.0.2.9\n"
            "nameserver 192.0.2.1\nnameserver 198.51.100.53\n")
    assert parse_nameservers(text) == ("10.0.0.2", "fe80::1", "192.0.2.1")  # the first three
    assert parse_nameservers("options ndots:2\n") == DEFAULT_NAMESERVERS
