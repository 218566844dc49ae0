"""A throwaway Dovecot IMAP server for integration tests.

``Dovecot`` writes a self-contained configuration under a temporary directory and
runs ``dovecot -F -c <dir>/dovecot.conf`` as a child process, listening on
127.0.0.1 only, on ports picked at runtime: a plain IMAP port offering STARTTLS
and an IMAPS port, both using a self-signed certificate made at test time. It
never touches the system Dovecot service or /etc/dovecot.

Tests "receive" mail with :meth:`Dovecot.deliver` (an IMAP APPEND) and can force
a UIDVALIDITY change with :meth:`Dovecot.reset_uidvalidity`.

The pytest fixtures ``dovecot`` and ``dovecot_factory`` live here too; a test
module (or a conftest) imports them to make them available. They skip when the
``dovecot`` binary is missing, except when the ``CI`` environment variable is
set, where a missing install must fail loudly instead.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from tests.support.certs import SelfSignedCert, make_self_signed_cert

HOST = "127.0.0.1"
DEFAULT_USERS: Mapping[str, str] = {"support@example.test": "secret"}

# Dovecot refuses to hand a mailbox to uid/gid 0 ("Mail access not allowed for
# root"), so when the tests run as root the mail processes run as this user.
ROOT_MAIL_USER = "nobody"

# Dovecot lives in sbin, which is not on every user's PATH.
_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"]
)
_PORT_ATTEMPTS = 3
_APPENDUID_RE = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")

TlsMode = Literal["plain", "starttls", "ssl"]


class DovecotError(RuntimeError):
    """The throwaway server could not be configured, started or driven."""


def find_binary(name: str) -> str | None:
    """Absolute path of a Dovecot tool (``dovecot``, ``doveadm``), or None."""
    return shutil.which(name, path=_SEARCH_PATH)


def _free_port() -> int:
    # The port is released before Dovecot binds it, so another process could grab
    # it in between; start() retries with fresh ports when that happens.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _has_exited(pid: int) -> bool:
    # WNOWAIT leaves the child unreaped, so its pid (and group id) stays reserved.
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _check_passwd_field(kind: str, value: str) -> None:
    # passwd-file is colon separated, one entry per line.
    if not value or any(c in value for c in ":\n\r"):
        raise ValueError(f"{kind} {value!r} must be non-empty without ':' or newlines")


class Dovecot:
    """A Dovecot instance private to one test (or module); use as a context manager.

    >>> with Dovecot(tmp_path, users={"support@example.test": "secret"}) as imap:
    ...     imap.deliver("support@example.test", b"Subject: hi\\r\\n\\r\\nbody\\r\\n")
    """

    host: str = HOST

    def __init__(
        self,
        workdir: Path,
        users: Mapping[str, str] | None = None,
        *,
        startup_timeout: float = 10.0,
        extra_config: str = "",
    ) -> None:
        """Prepare (but do not start) a server whose files live under ``workdir``.

        ``extra_config`` is appended verbatim to dovecot.conf, for tests that need
        a setting this class does not expose.
        """
        self.workdir = Path(workdir) / "dovecot"
        self._users: dict[str, str] = {}
        for name, password in (DEFAULT_USERS if users is None else users).items():
            _check_passwd_field("user name", name)
            _check_passwd_field("password", password)
            self._users[name] = password
        self.startup_timeout = startup_timeout
        self.extra_config = extra_config

        self.config_path = self.workdir / "dovecot.conf"
        self.log_path = self.workdir / "dovecot.log"
        self.stdout_path = self.workdir / "dovecot.stdout"
        self._passwd_path = self.workdir / "passwd"
        self._cert: SelfSignedCert | None = None
        self._mail_root: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._port = 0
        self._ssl_port = 0

    # -- properties -------------------------------------------------------------

    @property
    def port(self) -> int:
        """Plain IMAP port; STARTTLS is offered on it."""
        self._require_running()
        return self._port

    @property
    def ssl_port(self) -> int:
        """Implicit-TLS (IMAPS) port."""
        self._require_running()
        return self._ssl_port

    @property
    def cert(self) -> SelfSignedCert:
        if self._cert is None:
            raise DovecotError("the server has not been started")
        return self._cert

    @property
    def cert_path(self) -> Path:
        """The server certificate; load it as a client's CA file to trust the server."""
        return self.cert.cert_path

    @property
    def users(self) -> dict[str, str]:
        """User name -> password (a copy)."""
        return dict(self._users)

    @property
    def mail_root(self) -> Path:
        """Directory holding every user's home and Maildir."""
        if self._mail_root is None:
            raise DovecotError("the server has not been started")
        return self._mail_root

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ---------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Write the configuration, start Dovecot and wait until it greets clients."""
        if self._proc is not None:
            raise DovecotError("already started")
        binary = find_binary("dovecot")
        if binary is None:
            raise DovecotError(
                "the dovecot binary is not installed (see .ci/install-system-packages)"
            )

        self.workdir.mkdir(parents=True, exist_ok=True)
        self._cert = make_self_signed_cert(self.workdir / "tls", name="dovecot")
        self._mail_root = self._make_mail_root()
        self._write_passwd()

        for attempt in range(1, _PORT_ATTEMPTS + 1):
            self._port, self._ssl_port = _free_port(), _free_port()
            self.config_path.write_text(self._render_config())
            with self.stdout_path.open("ab") as out:
                self._proc = subprocess.Popen(
                    [binary, "-F", "-c", str(self.config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    # Own process group, so stop() can reap every child if the
                    # master dies without taking them down.
                    start_new_session=True,
                )
            try:
                self._wait_until_ready()
            except DovecotError:
                port_taken = "Address already in use" in self.log_tail()
                self.stop(cleanup=False, grace=0)
                if port_taken and attempt < _PORT_ATTEMPTS:
                    continue
                self._remove_mail_root()
                raise
            return self
        raise AssertionError("unreachable")

    def stop(self, *, cleanup: bool = True, grace: float = 0.5) -> None:
        """Terminate Dovecot and all its children and reap them; idempotent.

        The process group gets SIGTERM, then SIGKILL for whatever is left after
        ``grace`` seconds: a test server's state is thrown away, and SIGTERM to
        the master alone sometimes has it wait a full second for its children.
        """
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and not _has_exited(proc.pid):
                time.sleep(0.02)
            # Not reaped yet, so the master (alive or a zombie) still pins the
            # group id and this cannot hit an unrelated group that reused it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        if cleanup:
            self._remove_mail_root()

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of Dovecot's log and of its stdout/stderr, for error messages."""
        parts = []
        for path in (self.stdout_path, self.log_path):
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path.name} ---\n" + "\n".join(text))
        return "\n".join(parts) or "(no log output)"

    # -- client helpers ----------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting this server's certificate, hostname checks on."""
        return self.cert.client_context()

    def client(self, tls: TlsMode = "plain", *, timeout: float = 10.0) -> IMAPClient:
        """An unauthenticated IMAPClient connected with the given transport."""
        if tls == "ssl":
            return IMAPClient(
                self.host, port=self.ssl_port, ssl=True,
                ssl_context=self.ssl_context(), timeout=timeout,
            )  # fmt: skip
        client = IMAPClient(self.host, port=self.port, ssl=False, timeout=timeout)
        if tls == "starttls":
            client.starttls(self.ssl_context())
        return client

    @contextlib.contextmanager
    def login(self, user: str, tls: TlsMode = "plain") -> Iterator[IMAPClient]:
        """A logged-in IMAPClient for ``user``, logged out afterwards."""
        client = self.client(tls)
        try:
            client.login(user, self._password(user))
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def deliver(
        self,
        user: str,
        raw: bytes,
        folder: str = "INBOX",
        *,
        flags: Iterable[bytes | str] = (),
        msg_time: datetime | None = None,
    ) -> int:
        """Put ``raw`` into ``user``'s ``folder`` via IMAP APPEND; return its UID.

        The folder is created if missing. Use CRLF line endings if the exact bytes
        matter: IMAP stores what it is given and returns it unchanged.
        """
        with self.login(user) as client:
            if folder.upper() != "INBOX" and not client.folder_exists(folder):
                client.create_folder(folder)
            response = client.append(folder, raw, flags=tuple(flags), msg_time=msg_time)
        match = _APPENDUID_RE.search(response)
        if match is None:
            raise DovecotError(f"APPEND response carries no APPENDUID: {response!r}")
        return int(match.group(2))

    def uidvalidity(self, user: str, folder: str = "INBOX") -> int:
        with self.login(user) as client:
            status = client.folder_status(folder, [b"UIDVALIDITY"])
        return int(status[b"UIDVALIDITY"])

    def reset_uidvalidity(self, user: str, folder: str = "INBOX", *, renumber: bool = False) -> int:
        """Give ``folder`` a new, higher UIDVALIDITY; return the new value.

        The messages stay. With ``renumber`` they are also re-appended (same bytes,
        flags and internal date) so they get new UIDs, as when a server rebuilds
        or recreates a mailbox. Sessions that have the folder selected are
        disconnected by Dovecot, as a real server would do.
        """
        doveadm = find_binary("doveadm")
        if doveadm is None:
            raise DovecotError("doveadm is not installed")
        if renumber:
            self._reappend_all(user, folder)
        new_value = self.uidvalidity(user, folder) + 1
        # IMAP has no command for this; doveadm updates the index directly, and
        # INBOX cannot be deleted and recreated over IMAP to get the same effect.
        cmd = [
            doveadm, "-c", str(self.config_path), "mailbox", "update",
            "-u", user, "--uid-validity", str(new_value), folder,
        ]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise DovecotError(
                f"doveadm mailbox update failed ({result.returncode}): "
                f"{result.stderr.strip()}\n{self.log_tail()}"
            )
        actual = self.uidvalidity(user, folder)
        if actual != new_value:
            raise DovecotError(f"UIDVALIDITY is {actual} after setting it to {new_value}")
        return actual

    def add_user(self, user: str, password: str) -> None:
        """Add or change a user while the server runs (passwd-file is re-read on change)."""
        _check_passwd_field("user name", user)
        _check_passwd_field("password", password)
        self._users[user] = password
        if self._mail_root is not None:
            self._write_passwd()
        if self.running:
            self._wait_for_login(user, password)

    def _wait_for_login(self, user: str, password: str, timeout: float = 5.0) -> None:
        # Dovecot stats passwd-file at most once a second, so a change made right
        # after a lookup is only picked up on the next second's lookup.
        deadline = time.monotonic() + timeout
        while True:
            client = self.client()
            try:
                client.login(user, password)
                return
            except LoginError:
                if time.monotonic() > deadline:
                    raise DovecotError(
                        f"user {user!r} still cannot log in {timeout:.0f}s after being added"
                    ) from None
            finally:
                with contextlib.suppress(Exception):
                    client.logout()
            time.sleep(0.1)

    # -- internals ---------------------------------------------------------------

    def _password(self, user: str) -> str:
        try:
            return self._users[user]
        except KeyError:
            raise DovecotError(f"unknown user {user!r}; known: {sorted(self._users)}") from None

    def _require_running(self) -> None:
        if not self.running:
            raise DovecotError("the server is not running")

    def _reappend_all(self, user: str, folder: str) -> None:
        with self.login(user) as client:
            client.select_folder(folder)
            uids = client.search("ALL")
            fetched = client.fetch(uids, [b"BODY.PEEK[]", b"FLAGS", b"INTERNALDATE"])
            for uid in sorted(fetched):
                data = fetched[uid]
                flags = [f for f in data[b"FLAGS"] if f != b"\\Recent"]
                client.append(folder, data[b"BODY[]"], flags=flags, msg_time=data[b"INTERNALDATE"])
            if uids:
                client.delete_messages(uids)
                client.expunge(uids)

    def _make_mail_root(self) -> Path:
        if os.geteuid() != 0:
            root = self.workdir / "mail"
            root.mkdir(exist_ok=True)
            return root
        # As root, mail is accessed as ROOT_MAIL_USER, which cannot traverse
        # pytest's 0700 /tmp/pytest-of-root; so the mailboxes live in a private
        # temp dir of their own, owned by that user and removed by stop().
        entry = pwd.getpwnam(ROOT_MAIL_USER)
        root = Path(tempfile.mkdtemp(prefix="dovecot-mail-"))
        os.chown(root, entry.pw_uid, entry.pw_gid)
        return root

    def _remove_mail_root(self) -> None:
        root, self._mail_root = self._mail_root, None
        if root is not None and not root.is_relative_to(self.workdir):
            shutil.rmtree(root, ignore_errors=True)

    def _write_passwd(self) -> None:
        # {PLAIN} so tests can read the passwords back from the file when debugging.
        lines = "".join(f"{user}:{{PLAIN}}{pw}::::::\n" for user, pw in self._users.items())
        tmp = self._passwd_path.with_suffix(".tmp")
        tmp.write_text(lines)
        tmp.chmod(0o600)
        tmp.replace(self._passwd_path)

    def _render_config(self) -> str:
        me = pwd.getpwuid(os.geteuid()).pw_name
        if os.geteuid() == 0:
            mail = pwd.getpwnam(ROOT_MAIL_USER)
            identity = f"""
# Login processes refuse to run as root; dovenull is the packaged login user and
# they are chrooted into base_dir/login, so they need no access to the work dir.
default_login_user = dovenull
# Auth and the other internal services read passwd-file and sockets under the
# work dir, which sits in pytest's root-only tmp tree.
default_internal_user = root
default_internal_group = root
# Dovecot never serves mail as uid 0, so mail processes drop to {ROOT_MAIL_USER}.
mail_uid = {mail.pw_uid}
mail_gid = {mail.pw_gid}
first_valid_uid = 1
first_valid_gid = 1
"""
        else:
            # Rootless Dovecot: every service runs as the invoking user, and
            # nothing can be chrooted.
            identity = f"""
default_login_user = {me}
default_internal_user = {me}
default_internal_group = {grp.getgrgid(os.getegid()).gr_name}
first_valid_uid = 1
first_valid_gid = 1
service anvil {{
  chroot =
}}
service auth-worker {{
  user = $default_internal_user
}}
"""
        # Chrooting needs root; rootless Dovecot must switch it off.
        login_chroot = "" if os.geteuid() == 0 else "  chroot ="
        w = self.workdir
        cert = self.cert
        return f"""# Generated by tests/support/dovecot.py for one test run; not for production.
protocols = imap
listen = {HOST}
instance_name = test-dovecot-{self._port}
base_dir = {w}/run
state_dir = {w}/state
log_path = {self.log_path}
info_log_path = {self.log_path}
debug_log_path = {self.log_path}
auth_verbose = yes
{identity}
mail_home = {self.mail_root}/%u
mail_location = maildir:~/Maildir
# Tests log in with plain passwords, with and without TLS.
disable_plaintext_auth = no
auth_mechanisms = plain login
ssl = yes
ssl_cert = <{cert.cert_path}
ssl_key = <{cert.key_path}
# New mail reaches IDLE through inotify on the index log; this is the fallback
# poll, so a message dropped in by any route is seen within about a second.
mailbox_idle_check_interval = 1 secs
# Keep failed-login tests fast. Without the anvil-auth-penalty socket (mode 0
# means "don't create it") the per-IP penalty, which grows to 4+ s after a couple
# of failures from 127.0.0.1, is off; login_trusted_networks does not bypass it.
auth_failure_delay = 0
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
login_greeting = Dovecot test server ready.
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self._passwd_path}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {self._passwd_path}
}}
service imap-login {{
{login_chroot}
  inet_listener imap {{
    address = {HOST}
    port = {self._port}
  }}
  inet_listener imaps {{
    address = {HOST}
    port = {self._ssl_port}
    ssl = yes
  }}
}}
{self.extra_config}
"""

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last_error = "no attempt made"
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise DovecotError(
                    f"dovecot exited with status {self._proc.returncode} during startup\n"
                    f"{self.log_tail()}"
                )
            try:
                # The greeting comes from imap-login, so it proves more than the
                # master having bound the port.
                with socket.create_connection((HOST, self._port), timeout=1) as sock:
                    greeting = sock.recv(200)
                if greeting.startswith(b"* OK"):
                    with socket.create_connection((HOST, self._ssl_port), timeout=1):
                        return
                last_error = f"unexpected greeting {greeting!r}"
            except OSError as exc:
                last_error = str(exc)
            time.sleep(0.05)
        raise DovecotError(
            f"dovecot did not accept IMAP connections on {HOST}:{self._port} within "
            f"{self.startup_timeout:.0f}s (last error: {last_error})\n{self.log_tail()}"
        )


# -- pytest fixtures -------------------------------------------------------------


def require_dovecot() -> None:
    """Skip the calling test if Dovecot is missing; fail instead when ``CI`` is set."""
    missing = [tool for tool in ("dovecot", "doveadm") if find_binary(tool) is None]
    if not missing:
        return
    reason = f"{' and '.join(missing)} not installed; run .ci/install-system-packages"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is an error rather than a skip)")
    pytest.skip(reason)


DovecotFactory = Callable[..., Dovecot]


@pytest.fixture(name="dovecot_factory")
def dovecot_factory_fixture(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DovecotFactory]:
    """Start Dovecot servers on demand: ``dovecot_factory(users={...}, **kwargs)``.

    Every server started through it is stopped at teardown.
    """
    require_dovecot()
    started: list[Dovecot] = []

    def start(users: Mapping[str, str] | None = None, **kwargs: object) -> Dovecot:
        server = Dovecot(tmp_path_factory.mktemp("dovecot"), users, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture(name="dovecot")
def dovecot_fixture(dovecot_factory: DovecotFactory) -> Dovecot:
    """A running Dovecot with the user ``support@example.test`` / ``secret``."""
    return dovecot_factory()
