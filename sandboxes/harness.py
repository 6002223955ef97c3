"""The program that runs INSIDE the sandbox: it starts untrusted code and, for graded runs, judges it.

This file is copied into every sandbox and run by the sandbox's interpreter (`python -I -S -B`),
so it imports nothing from this repository and only the standard library, and it must run on
any Python >= 3.8. The host side is `sandboxes/executor.py`.

    python harness.py MODE JOB_FD CHANNEL_FD SECRET_FD

JOB_FD holds a JSON job (the untrusted program and non-secret inputs). CHANNEL_FD is a pipe to
the host on which this process writes newline-delimited JSON: first {"event": "started"}, and
for graded modes a final {"event": "verdict", "nonce": ...}. SECRET_FD (-1 when unused) holds
what the untrusted code must never see: the tests and the nonce.

Modes
- exec: run `code` (or exec `argv`) as `__main__`, like `python -c`. No verdict.
- calls: grade a program by calling into it (HumanEval's check(candidate), MBPP's asserts).
- io: run a program once per stdin input; report each case's stdout. The host compares them
  with the expected outputs, which never enter the sandbox.

How a verdict stays out of the untrusted code's reach (calls mode)
1. The grader ("driver", this process) forks the solution process BEFORE it reads the secret
   fd. The solution process closes the channel and secret fds before running any untrusted code,
   so it holds neither the tests, nor the nonce, nor a way to write to the host's channel. (No
   /proc is mounted and ptrace/process_vm_* are refused by seccomp, so it cannot borrow them.)
2. The tests run in the driver. Every name the program defines that is not plain data (its
   functions and classes, and library objects it binds, such as `entry = pdb.run`) is a
   `RemoteRef`: calling one sends the arguments to the solution process over a pipe and decodes
   the reply with a strict decoder that only ever builds plain builtin values (int, str, list,
   dict, ...) or new RemoteRefs. So no object the program chose ever runs in this process, and
   an object whose `__eq__` always returns True never reaches a comparison: it arrives as a
   RemoteRef, and RemoteRefs compare equal only to themselves and refuse truth testing.
3. `sys.exit(0)` / `os._exit(0)` in the solution only ends the solution process: the call
   raises in the driver and the test fails. A printed "passed" line goes to stdout, which the
   host never reads for the verdict. The verdict is whatever the driver writes on the channel,
   tagged with the nonce.
4. The driver is the namespace's pid 1 (bwrap --as-pid-1) with no signal handler installed
   (Python's SIGINT handler is reset): signals sent from inside the namespace
   (`os.kill(os.getppid(), 9)`, `kill(-1, 9)`, SIGSTOP, SIGINT) do not reach it.
5. The driver works in this file's read-only folder with HOME there, and imports only from the
   read-only standard library: a file the program writes (`.pdbrc`, `__main__.py`, a module
   named like a standard one) is never read by the driver. The program's processes get the
   writable folder and HOME the sandbox set up.
A solution that needs longer than the per-test limit is killed (its process group) and a fresh
solution process is started for the next test with fork+exec, so it never inherits the tests.
As pid 1 this process also reaps orphans (see _reap_orphans); in exec mode it forks the program
as pid 2 and only waits for it.
"""

from __future__ import annotations

# Only modules that cost nothing to import: this file starts once per execution, and `json`,
# `signal`, `types` and `re` would add 20-40 ms of start-up (they import `re` and `enum`).
import _json
import _signal
import builtins
import os
import select
import sys
import time

SIGKILL = _signal.SIGKILL
ModuleType = type(sys)
FunctionType = type(lambda: None)
BuiltinFunctionType = type(len)

MAX_DEPTH = 100  # nesting of values crossing the process boundary
MAX_ITER_ITEMS = 1_000_000  # a returned iterator is materialised up to this many items
_EXIT_LOAD_FAILED = 3


# --------------------------------------------------------------------------------------------
# JSON without the json package: the C scanner and string escaper it is built on.


class _ScanContext:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict = {}

    @staticmethod
    def parse_constant(name):
        raise ValueError(f"{name} is not valid here")


_scan_once = _json.make_scanner(_ScanContext())
_escape = _json.encode_basestring_ascii


def loads(data):
    """Strict JSON -> Python. Raises ValueError on anything malformed (RecursionError if deep)."""
    s = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    try:
        obj, end = _scan_once(s, 0)
    except StopIteration:
        raise ValueError("not JSON") from None
    if s[end:].strip():
        raise ValueError("extra data after JSON value")
    return obj


def dumps(o) -> str:
    out: list = []
    _dump_into(o, out)
    return "".join(out)


def _dump_into(o, out) -> None:
    t = type(o)
    if t is str:
        out.append(_escape(o))
    elif o is None:
        out.append("null")
    elif o is True:
        out.append("true")
    elif o is False:
        out.append("false")
    elif t is int:
        out.append(int.__repr__(o))
    elif t is float:
        if o != o or o - o != 0.0:
            raise ValueError("NaN and infinities are not JSON")
        out.append(float.__repr__(o))
    elif t is list or t is tuple:
        out.append("[")
        for i, v in enumerate(o):
            if i:
                out.append(",")
            _dump_into(v, out)
        out.append("]")
    elif t is dict:
        out.append("{")
        for i, (k, v) in enumerate(o.items()):
            if type(k) is not str:
                raise TypeError("JSON object keys must be str")
            if i:
                out.append(",")
            out.append(_escape(k))
            out.append(":")
            _dump_into(v, out)
        out.append("}")
    else:
        raise TypeError(f"{t.__name__} is not JSON")


# --------------------------------------------------------------------------------------------
# I/O helpers


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        b = os.read(fd, 1 << 20)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _emit(fd: int, obj: dict) -> None:
    _write_all(fd, (dumps(obj) + "\n").encode())


def _fmt_exc(e: BaseException, limit: int = 500) -> str:
    try:
        msg = str(e)
    except BaseException:  # a hostile __str__
        msg = "<unprintable>"
    return (type(e).__name__ + (": " + msg if msg else ""))[:limit]


class WireError(Exception):
    """A malformed, oversized or late message between the two processes."""


class ChildGone(BaseException):
    """The solution process died, hung past its deadline or broke the protocol.

    A BaseException so that a test's own `except Exception:` (written to expect an error from the
    solution) cannot swallow it: a solution must not pass such a test by hanging or dying."""


def _send_frame(fd: int, obj, deadline: float | None = None) -> None:
    data = dumps(obj).encode()
    data = len(data).to_bytes(4, "big") + data
    view = memoryview(data)
    while view:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChildGone("timed out sending to the solution process")
            _, w, _ = select.select([], [fd], [], left)
            if not w:
                continue
        try:
            n = os.write(fd, view[: 1 << 16])
        except BlockingIOError:
            continue
        except (BrokenPipeError, OSError) as e:
            raise ChildGone(f"the solution process is gone ({e.__class__.__name__})") from None
        view = view[n:]


def _recv_exact(fd: int, n: int, deadline: float | None) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChildGone("timed out")
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                continue
        try:
            b = os.read(fd, min(n - len(buf), 1 << 20))
        except BlockingIOError:
            continue
        if not b:
            raise ChildGone("the solution process exited")
        buf += b
    return bytes(buf)


def _recv_frame(fd: int, deadline: float | None, max_bytes: int):
    n = int.from_bytes(_recv_exact(fd, 4, deadline), "big")
    if n > max_bytes:
        raise ChildGone(f"message of {n} bytes exceeds the {max_bytes}-byte limit")
    try:
        return loads(_recv_exact(fd, n, deadline))
    except (ValueError, RecursionError) as e:  # ValueError includes the int-digits limit
        raise ChildGone(f"malformed message ({type(e).__name__})") from None


# --------------------------------------------------------------------------------------------
# Values crossing the process boundary. Encoding is by EXACT type (no subclasses), decoding
# builds fresh builtin objects: nothing the solution defines survives the trip as code.


def _stdlib_value_types():
    """(type, tag) for stdlib value types, looked up only if already imported."""
    out = []
    col = sys.modules.get("collections")
    if col is not None:
        out += [(col.Counter, "$counter"), (col.OrderedDict, "$odict"), (col.defaultdict, "$ddict"), (col.deque, "$deque")]
    dec = sys.modules.get("decimal")
    if dec is not None:
        out.append((dec.Decimal, "$decimal"))
    fr = sys.modules.get("fractions")
    if fr is not None:
        out.append((fr.Fraction, "$fraction"))
    return out


_ITER_TYPES = tuple(
    type(x)
    for x in (
        (i for i in ()),
        map(int, ()),
        filter(None, ()),
        zip(),
        enumerate(()),
        reversed(()),
        iter([]),
        iter(()),
        iter(range(0)),
        iter(""),
        iter({}),
        iter(set()),
        iter(b""),
        reversed([]),
        iter({}.values()),
        iter({}.items()),
    )
)
_KEYS, _VALUES, _ITEMS = type({}.keys()), type({}.values()), type({}.items())
# Builtin types may cross as values (MBPP passes `int`, `str`... to the functions under test).
_WIRE_TYPES = {t.__name__: t for t in (int, float, complex, str, bytes, bytearray, bool, list, tuple, dict, set, frozenset, object, range)}


class Encoder:
    """Turns a value into JSON-able data. `to_ref(obj)` handles what is not plain data."""

    def __init__(self, to_ref):
        self.to_ref = to_ref
        self.stdlib = _stdlib_value_types()

    def enc(self, x, depth: int = 0):
        if depth > MAX_DEPTH:
            raise ValueError("value nested too deeply to pass between processes")
        t = type(x)
        d = depth + 1
        if x is None or t is bool or t is str:
            return x
        if t is int:
            return x if -(1 << 62) < x < (1 << 62) else {"$int": hex(x)}
        if t is float:
            return x if x - x == 0.0 else {"$float": repr(x)}  # inf, nan
        if t is list:
            return [self.enc(v, d) for v in x]
        if t is tuple:
            return {"$tuple": [self.enc(v, d) for v in x]}
        if t is dict:
            return {"$dict": [[self.enc(k, d), self.enc(v, d)] for k, v in x.items()]}
        if t is set:
            return {"$set": [self.enc(v, d) for v in x]}
        if t is frozenset:
            return {"$frozenset": [self.enc(v, d) for v in x]}
        if t is bytes:
            return {"$bytes": x.hex()}
        if t is bytearray:
            return {"$bytearray": x.hex()}
        if t is complex:
            return {"$complex": [self.enc(x.real, d), self.enc(x.imag, d)]}
        if t is range:
            return {"$range": [x.start, x.stop, x.step]}
        if t is _KEYS:
            return {"$keys": [self.enc(v, d) for v in x]}
        if t is _VALUES:
            return {"$values": [self.enc(v, d) for v in x]}
        if t is _ITEMS:
            return {"$items": [[self.enc(k, d), self.enc(v, d)] for k, v in x]}
        if t is type and _WIRE_TYPES.get(x.__name__) is x:
            return {"$type": x.__name__}
        if t in _ITER_TYPES:
            items = []
            for v in x:
                if len(items) >= MAX_ITER_ITEMS:
                    raise ValueError(f"returned iterator yields more than {MAX_ITER_ITEMS} items")
                items.append(self.enc(v, d))
            return {"$iter": items}
        for typ, tag in self.stdlib:
            if t is typ:
                if tag in ("$counter", "$odict", "$ddict"):
                    return {tag: [[self.enc(k, d), self.enc(v, d)] for k, v in x.items()]}
                if tag == "$deque":
                    return {tag: [self.enc(v, d) for v in x]}
                if tag == "$decimal":
                    return {tag: str(x)}
                return {tag: [x.numerator, x.denominator]}
        return self.to_ref(x)


class Decoder:
    """Strict inverse of Encoder. `from_ref(id)` resolves {"$ref": id}."""

    def __init__(self, from_ref):
        self.from_ref = from_ref

    def dec(self, v, depth: int = 0):
        if depth > MAX_DEPTH:
            raise WireError("value nested too deeply")
        t = type(v)
        d = depth + 1
        if v is None or t is bool or t is str or t is int:
            return v
        if t is float:
            return v
        if t is list:
            return [self.dec(x, d) for x in v]
        if t is not dict or len(v) != 1:
            raise WireError(f"unexpected {t.__name__} in message")
        ((tag, p),) = v.items()
        if tag == "$tuple":
            return tuple(self._list(p, d))
        if tag == "$set":
            return set(self._list(p, d))
        if tag == "$frozenset":
            return frozenset(self._list(p, d))
        if tag in ("$dict", "$odict", "$counter", "$ddict", "$items"):
            pairs = self._pairs(p, d)
            if tag == "$dict":
                return dict(pairs)
            if tag == "$items":
                return dict(pairs).items()
            import collections

            if tag == "$odict":
                return collections.OrderedDict(pairs)
            if tag == "$counter":
                return collections.Counter(dict(pairs))
            # The default_factory cannot cross; what the tests see is the mapping.
            return collections.defaultdict(None, pairs)
        if tag == "$keys":
            return dict.fromkeys(self._list(p, d)).keys()
        if tag == "$values":
            return dict(enumerate(self._list(p, d))).values()
        if tag == "$iter":
            return iter(self._list(p, d))
        if tag == "$deque":
            import collections

            return collections.deque(self._list(p, d))
        if tag == "$int":
            if type(p) is not str:
                raise WireError("bad $int")
            return int(p, 16)
        if tag == "$float":
            if p not in ("inf", "-inf", "nan"):
                raise WireError("bad $float")
            return float(p)
        if tag == "$complex":
            re_, im = self._list(p, d)
            if type(re_) is not float or type(im) is not float:
                raise WireError("bad $complex")
            return complex(re_, im)
        if tag in ("$bytes", "$bytearray"):
            if type(p) is not str:
                raise WireError("bad bytes")
            b = bytes.fromhex(p)
            return b if tag == "$bytes" else bytearray(b)
        if tag == "$range":
            a = self._list(p, d)
            if len(a) != 3 or any(type(x) is not int for x in a):
                raise WireError("bad $range")
            return range(*a)
        if tag == "$decimal":
            if type(p) is not str:
                raise WireError("bad $decimal")
            import decimal

            return decimal.Decimal(p)
        if tag == "$fraction":
            a = self._list(p, d)
            if len(a) != 2 or any(type(x) is not int for x in a):
                raise WireError("bad $fraction")
            import fractions

            return fractions.Fraction(*a)
        if tag == "$type":
            if type(p) is not str or p not in _WIRE_TYPES:
                raise WireError("bad $type")
            return _WIRE_TYPES[p]
        if tag == "$ref":
            if type(p) is not int:
                raise WireError("bad $ref")
            return self.from_ref(p)
        raise WireError(f"unknown tag {tag!r}")

    def _list(self, p, d):
        if type(p) is not list:
            raise WireError("expected a list")
        return [self.dec(x, d) for x in p]

    def _pairs(self, p, d):
        if type(p) is not list:
            raise WireError("expected a list of pairs")
        out = []
        for kv in p:
            if type(kv) is not list or len(kv) != 2:
                raise WireError("expected a pair")
            out.append((self.dec(kv[0], d), self.dec(kv[1], d)))
        return out


# --------------------------------------------------------------------------------------------
# Where the grader and the program live

# The program's working folder and HOME as the sandbox set them up (writable: /tmp). The grader
# works in this file's own folder, which the program cannot write, with HOME pointing there
# too: nothing the grader's process could read relative to its folder or HOME (.pdbrc,
# __main__.py, ...) can be the program's.
PROGRAM_DIR = "/"
PROGRAM_HOME = None


def _enter_grader() -> None:
    global PROGRAM_DIR, PROGRAM_HOME
    PROGRAM_DIR, PROGRAM_HOME = os.getcwd(), os.environ.get("HOME")
    grader_dir = os.path.dirname(os.path.abspath(__file__))
    os.chdir(grader_dir)
    os.environ["HOME"] = grader_dir
    # From inside its pid namespace, pid 1 receives only the signals it has a handler for, and
    # Python installs one for SIGINT (KeyboardInterrupt): a program's os.kill(1, SIGINT) would
    # end the grader. With the default disposition the kernel drops it.
    _signal.signal(_signal.SIGINT, _signal.SIG_DFL)


def _become_program(cwd, home) -> None:
    """In a child of the grader, before any untrusted code: the program's folder, HOME and the
    SIGINT behaviour of a normal Python process."""
    try:
        os.chdir(cwd)
    except OSError:
        pass
    if home is None:
        os.environ.pop("HOME", None)
    else:
        os.environ["HOME"] = home
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)


# --------------------------------------------------------------------------------------------
# exec mode


def _main_module():
    mod = ModuleType("__main__")
    mod.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = mod
    return mod


def _print_trimmed_traceback(e: BaseException) -> None:
    import traceback

    tb = e.__traceback__
    # Drop this file's frames so the traceback reads like `python -c`'s.
    while tb is not None and tb.tb_frame.f_code.co_filename == _print_trimmed_traceback.__code__.co_filename:
        tb = tb.tb_next
    try:
        traceback.print_exception(type(e), e, tb)
    except BaseException:
        sys.stderr.write(_fmt_exc(e) + "\n")


def run_as_main(code: str, filename: str = "<string>") -> int:
    """Run code like `python -c`; returns the exit status Python would return."""
    sys.argv = ["-c"]
    sys.path.insert(0, "")
    mod = _main_module()
    try:
        exec(compile(code, filename, "exec"), mod.__dict__)
    except SystemExit as e:
        c = e.code
        if c is None:
            return 0
        if isinstance(c, int):
            return c & 0xFF
        try:
            sys.stderr.write(str(c) + "\n")
        except BaseException:
            pass
        return 1
    except BaseException as e:
        _print_trimmed_traceback(e)
        return 1
    return 0


def _flush_and_exit(status: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    os._exit(status)


def _reap_orphans() -> None:
    """This process is the namespace's pid 1 (bwrap --as-pid-1): processes whose parent died are
    ours to reap. Unreaped zombies would keep counting against the process limit."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _exit_like(status: int) -> None:
    """Exit with a child's wait status: its code, or 128 + signal (pid 1 cannot die by a signal
    sent from inside its namespace, so the signal is reported the way shells do)."""
    if os.WIFSIGNALED(status):
        _flush_and_exit(128 + os.WTERMSIG(status))
    _flush_and_exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 255)


def mode_exec(job: dict, chan: int, secret: int) -> None:
    _emit(chan, {"event": "started"})
    os.close(chan)
    if secret >= 0:
        os.close(secret)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    # The program runs as pid 2, so that it behaves as anywhere else (pid 1 ignores signals it
    # has no handler for); this process stays as its init: it reaps orphans and reports the
    # program's exit status.
    main = os.fork()
    if main == 0:
        try:
            _become_program(PROGRAM_DIR, PROGRAM_HOME)
            argv = job.get("argv")
            if argv:
                try:
                    os.execvp(argv[0], argv)
                except OSError as e:
                    sys.stderr.write(f"cannot run {argv[0]!r}: {e.strerror}\n")
                    _flush_and_exit(127 if isinstance(e, FileNotFoundError) else 126)
            _flush_and_exit(run_as_main(job["code"]))
        finally:
            os._exit(70)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            _flush_and_exit(70)
        if pid == main:
            _exit_like(status)


# --------------------------------------------------------------------------------------------
# calls mode: the solution process


def _describe(ns: dict, enc: Encoder) -> dict:
    """What the program defined: plain data by value, everything else (functions, classes,
    modules, and library objects such as `pdb.run`) by reference, so that calling it runs it
    here, in the program's process, never in the grader's."""
    out = {}
    for name, v in list(ns.items()):
        if name.startswith("__") and name.endswith("__"):
            continue
        if isinstance(v, ModuleType) or callable(v):
            out[name] = enc.to_ref(v)
            continue
        try:
            out[name] = enc.enc(v)
        except Exception:  # unencodable inside a container: hand it over by reference
            out[name] = enc.to_ref(v)
    return out


def solution_main(program: str, req_fd: int, rep_fd: int, max_bytes: int) -> None:
    """Run the untrusted program, then serve the driver's calls until the pipe closes."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    sys.argv = ["-c"]
    sys.path.insert(0, "")
    objects: dict = {}
    ids: dict = {}

    def to_ref(obj):
        key = id(obj)
        rid = ids.get(key)
        if rid is None:
            rid = len(objects) + 1
            ids[key] = rid
            objects[rid] = obj
        return {"$ref": rid}

    def from_ref(rid):
        try:
            return objects[rid]
        except KeyError:
            raise WireError(f"unknown object reference {rid}") from None

    enc = Encoder(to_ref)
    dec = Decoder(from_ref)
    send, recv, fmt = _send_frame, _recv_frame, _fmt_exc  # bound now: the program may patch modules
    mod = _main_module()
    try:
        exec(compile(program, "<solution>", "exec"), mod.__dict__)
        enc.stdlib = _stdlib_value_types()
        names = _describe(mod.__dict__, enc)
    except BaseException as e:
        try:
            send(rep_fd, {"ready": False, "error": fmt(e)})
        except BaseException:
            pass
        _flush_and_exit(_EXIT_LOAD_FAILED)

    def flush():
        # The driver SIGKILLs this process when it is done: keep the program's output.
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass

    flush()
    send(rep_fd, {"ready": True, "names": names})
    while True:
        try:
            req = recv(req_fd, None, max_bytes)
        except BaseException:
            _flush_and_exit(0)
        try:
            op = req["op"]
            target = from_ref(req["ref"])
            if op == "call":
                args = dec.dec(req["args"])
                kwargs = dict(dec.dec(req["kwargs"]))
                value = target(*args, **kwargs)
            elif op == "getattr":
                value = getattr(target, req["name"])
            elif op == "setattr":
                setattr(target, req["name"], dec.dec(req["value"]))
                value = None
            else:
                raise WireError(f"unknown op {op!r}")
            enc.stdlib = _stdlib_value_types()
            reply = {"value": enc.enc(value)}
        except BaseException as e:  # SystemExit and KeyboardInterrupt from the solution included
            reply = {"error": {"type": type(e).__name__, "message": fmt(e)}}
        flush()
        try:
            send(rep_fd, reply)
        except BaseException:
            _flush_and_exit(0)


def mode_child(job_fd: int) -> None:
    """A solution process started by fork+exec (a restart): fresh memory, program from the pipe."""
    job = loads(_read_all(job_fd))
    os.close(job_fd)
    _become_program(job["cwd"], job["home"])
    solution_main(job["program"], job["req_fd"], job["rep_fd"], job["max_bytes"])


# --------------------------------------------------------------------------------------------
# calls mode: the driver

STARTED = time.monotonic()  # reset by main(): the verdict deadline counts from here
OUT_OF_TIME = "not run: the execution's time budget was used up"


class _VerdictDeadline:
    """When the verdict must go out (job["verdict_by_s"] after start, shortly before the host's
    wall-clock kill): every wait on the program is capped by it, and tests not started by then
    fail, so a slow program still gets a verdict (0 for the tests it ran out of time on) rather
    than none."""

    def __init__(self, at):
        self.at = at

    def __call__(self, deadline: float) -> float:
        return deadline if self.at is None else min(deadline, self.at)

    def expired(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at


def _verdict_deadline(job: dict) -> _VerdictDeadline:
    by = job.get("verdict_by_s")
    return _VerdictDeadline(None if by is None else STARTED + float(by))


class RemoteError(Exception):
    """An exception raised in the solution process whose type is not a builtin exception."""


class RemoteRef:
    """A handle on an object living in the solution process.

    Calls, attribute reads and writes go to the solution process. Equality is identity of the
    remote object, and truth testing is refused, so no remote object can satisfy `==` or an
    `assert obj` check: only plain values decoded from the wire can."""

    __slots__ = ("_qrl_id", "_qrl_type", "_qrl_conn", "_qrl_gen")

    def __init__(self, rid, type_name, conn):
        object.__setattr__(self, "_qrl_id", rid)
        object.__setattr__(self, "_qrl_type", type_name)
        object.__setattr__(self, "_qrl_conn", conn)
        object.__setattr__(self, "_qrl_gen", conn.generation)

    def __call__(self, *args, **kwargs):
        return self._qrl_conn.request(self, {"op": "call", "args": list(args), "kwargs": sorted(kwargs.items())})

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._qrl_conn.request(self, {"op": "getattr", "name": name})

    def __setattr__(self, name, value):
        self._qrl_conn.request(self, {"op": "setattr", "name": name, "value": value})

    def __eq__(self, other):
        return type(other) is RemoteRef and other._qrl_id == self._qrl_id and other._qrl_gen == self._qrl_gen

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash((self._qrl_gen, self._qrl_id))

    def __bool__(self):
        raise TypeError(f"the truth value of a {self._qrl_type} object returned by the solution is not defined")

    def __repr__(self):
        return f"<solution {self._qrl_type} object #{self._qrl_id}>"


class SolutionConn:
    """The driver's side of one solution process."""

    def __init__(self, pid, req_fd, rep_fd, max_bytes):
        self.pid, self.req_fd, self.rep_fd = pid, req_fd, rep_fd
        self.max_bytes = max_bytes
        self.generation = 0
        self.alive = True
        self.deadline = None  # set per test by the driver
        self.enc = Encoder(self._to_wire_ref)
        self.dec = Decoder(lambda rid: RemoteRef(rid, "object", self))

    def _to_wire_ref(self, obj):
        if type(obj) is RemoteRef:
            if obj._qrl_gen != self.generation:
                raise RuntimeError("this object belongs to a solution process that was restarted")
            return {"$ref": obj._qrl_id}
        raise TypeError(f"cannot pass a {type(obj).__name__} to the solution")

    def request(self, ref: RemoteRef, msg: dict):
        if not self.alive:
            raise ChildGone("the solution process is not running")
        if ref._qrl_gen != self.generation:
            raise RuntimeError("this object belongs to a solution process that was restarted")
        wire = {"op": msg["op"], "ref": ref._qrl_id}
        if "args" in msg:
            wire["args"] = self.enc.enc(msg["args"])
            wire["kwargs"] = self.enc.enc([[k, v] for k, v in msg["kwargs"]])
        if "name" in msg:
            wire["name"] = msg["name"]
        if "value" in msg:
            wire["value"] = self.enc.enc(msg["value"])
        try:
            _send_frame(self.req_fd, wire, self.deadline)
            reply = _recv_frame(self.rep_fd, self.deadline, self.max_bytes)
        except ChildGone:
            self.kill()
            raise
        if type(reply) is not dict:
            self.kill()
            raise ChildGone("malformed reply")
        if "error" in reply:
            err = reply["error"]
            if type(err) is not dict:
                self.kill()
                raise ChildGone("malformed error reply")
            name, message = str(err.get("type", "?")), str(err.get("message", ""))
            cls = getattr(builtins, name, None)
            # Exceptions with a meaning to the iteration protocol are not re-raised as themselves:
            # a StopIteration from the program inside map()/zip() in a test would end that
            # iteration early (`all(map(candidate, cases))` would hold on no cases at all).
            if (
                isinstance(cls, type)
                and issubclass(cls, Exception)
                and not issubclass(cls, (StopIteration, StopAsyncIteration))
                and cls.__module__ == "builtins"
            ):
                try:
                    raise cls(message)
                except TypeError:
                    pass  # exception types whose constructor wants other arguments
            raise RemoteError(f"{name}: {message}" if message else name)
        try:
            return self.dec.dec(reply.get("value"))
        except (WireError, TypeError, ValueError, RecursionError) as e:
            # TypeError: an unhashable value inside a set or dict key; the solution lied.
            self.kill()
            raise ChildGone(f"malformed value from the solution process ({_fmt_exc(e)})") from None

    def kill(self) -> None:
        if self.alive:
            self.alive = False
            for sig_target in (lambda: os.killpg(self.pid, SIGKILL), lambda: os.kill(self.pid, SIGKILL)):
                try:
                    sig_target()
                except OSError:
                    pass
            try:
                os.waitpid(self.pid, 0)
            except OSError:
                pass
        for fd in (self.req_fd, self.rep_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.req_fd = self.rep_fd = -1


def _spawn_solution(program: str, max_bytes: int, close_fds, fresh: bool) -> SolutionConn:
    """Start a solution process. `fresh` = fork+exec (memory of this process is not inherited)."""
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    job_r = job_w = -1
    if fresh:
        job_r, job_w = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    pid = os.fork()
    if pid == 0:  # the solution side: close every secret before any untrusted byte runs
        try:
            for fd in close_fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            os.close(req_w)
            os.close(rep_r)
            if fresh:
                os.close(job_w)
                os.set_inheritable(job_r, True)
                os.set_inheritable(req_r, True)
                os.set_inheritable(rep_w, True)
                os.execv(sys.executable, [sys.executable, "-I", "-S", "-B", os.path.abspath(__file__), "child", str(job_r), "-1", "-1"])
            _become_program(PROGRAM_DIR, PROGRAM_HOME)
            solution_main(program, req_r, rep_w, max_bytes)
        finally:
            os._exit(70)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass
    os.close(req_r)
    os.close(rep_w)
    os.set_blocking(req_w, False)  # a solution that stops reading must not block the driver
    if fresh:
        os.close(job_r)
        try:
            _write_all(
                job_w,
                dumps(
                    {"program": program, "req_fd": req_r, "rep_fd": rep_w, "max_bytes": max_bytes, "cwd": PROGRAM_DIR, "home": PROGRAM_HOME}
                ).encode(),
            )
        except OSError:
            pass
        os.close(job_w)
    return SolutionConn(pid, req_w, rep_r, max_bytes)


_IMPORT_MODULES = getattr(sys, "stdlib_module_names", None)


def _is_stdlib_module(name: str) -> bool:
    top = name.split(".")[0]
    if _IMPORT_MODULES is not None:
        return top in _IMPORT_MODULES
    try:
        import importlib.util

        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    origin = getattr(spec, "origin", None) or ""
    return origin in ("built-in", "frozen") or origin.startswith(sys.base_prefix)


class _Recorder:
    """Per-assert results of one test unit when asserts are split (fraction mode)."""

    def __init__(self, n: int, conn, timeout: float, cap):
        self.results = [None] * n  # None: not reached, True: every evaluation held, False: one failed
        self.conn, self.timeout, self.cap = conn, timeout, cap

    def __call__(self, i, thunk):
        self.conn.deadline = self.cap(time.monotonic() + self.timeout)  # each assert: its own time limit
        try:
            ok = bool(thunk())
        except Exception:
            ok = False
        if not ok:
            self.results[i] = False
        elif self.results[i] is None:
            self.results[i] = True


def _split_asserts(source: str):
    """Rewrite each `assert` (outside try blocks) into a recorded check that does not stop the
    test, so a partial pass can be counted. Returns (code object, number of asserts)."""
    import ast

    class Splitter(ast.NodeTransformer):
        n = 0
        in_try = 0

        def visit_Try(self, node):
            self.in_try += 1
            self.generic_visit(node)
            self.in_try -= 1
            return node

        visit_TryStar = visit_Try

        def visit_Assert(self, node):
            if self.in_try:
                return node
            i = self.n
            self.n += 1
            thunk = ast.Lambda(
                args=ast.arguments(posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[]),
                body=node.test,
            )
            call = ast.Call(func=ast.Name(id="__qrl_record__", ctx=ast.Load()), args=[ast.Constant(i), thunk], keywords=[])
            return ast.copy_location(ast.Expr(value=call), node)

    tree = ast.parse(source)
    sp = Splitter()
    tree = ast.fix_missing_locations(sp.visit(tree))
    return compile(tree, "<test>", "exec"), sp.n


_BUILTIN_NAMES = frozenset(dir(builtins))


def _import(name: str):
    __import__(name)
    return sys.modules[name]


def _identifiers_followed_by(source: str, follow: str) -> set:
    """Identifiers directly followed by `follow` (after blanks) and not preceded by a dot."""
    out = set()
    n = len(source)
    i = 0
    while i < n:
        c = source[i]
        if c.isalpha() or c == "_":
            j = i + 1
            while j < n and (source[j].isalnum() or source[j] == "_"):
                j += 1
            k = j
            while k < n and source[k] in " \t":
                k += 1
            if k < n and source[k] == follow and (i == 0 or source[i - 1] != "."):
                out.add(source[i:j])
            i = j
        elif c.isdigit():
            while i < n and (source[i].isalnum() or source[i] in "._"):
                i += 1
        else:
            i += 1
    return out


def _called_names(source: str) -> set:
    return _identifiers_followed_by(source, "(")


def _dotted_names(source: str) -> set:
    """Identifiers used as `name.attr` (`math.isclose` -> math), without `re`."""
    return _identifiers_followed_by(source, ".")


def _bind(name: str, wire, c: SolutionConn, module_uses: set):
    """The grader-side object for a name the program defined.

    Everything the program's process sends is decoded strictly: plain data becomes fresh
    builtin values, anything else a RemoteRef whose calls run in the program's process. The one
    exception is chosen by the tests, not the program: a name the tests use as `name.attr`
    that is a standard-library module is that module, imported here (`math.isclose` means the
    real math module whatever the program bound to `math`)."""
    if name in module_uses and _is_stdlib_module(name):
        return _import(name)
    value = c.dec.dec(wire)
    if type(value) is RemoteRef:
        object.__setattr__(value, "_qrl_type", name)
    return value


_PREIMPORTABLE = frozenset(
    "typing math cmath re collections itertools functools heapq bisect string operator random "
    "statistics fractions decimal datetime copy hashlib array numbers enum dataclasses".split()
)


def _preimport(program: str) -> None:
    for line in program.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in ("import", "from"):
            for w in words[1:] if words[0] == "import" else words[1:2]:
                top = w.strip(",").split(".")[0]
                if top in _PREIMPORTABLE and top not in sys.modules:
                    try:
                        __import__(top)
                    except Exception:
                        pass
                if words[0] == "import" and not w.endswith(","):
                    break


def mode_calls(job: dict, chan: int, secret: int) -> None:
    _emit(chan, {"event": "started"})
    program = job["program"]
    max_bytes = int(job.get("max_message_bytes", 64 << 20))
    unit_timeout = float(job["unit_timeout_s"])
    load_timeout = float(job.get("load_timeout_s", unit_timeout))
    expose = job.get("expose")  # list of names, or None for every name the program defines
    cap = _verdict_deadline(job)
    # Modules both processes will import are imported once, before the fork (typing alone
    # costs ~10 ms). Only well-known side-effect-free stdlib modules named by the program.
    _preimport(program)
    ns: dict = {}

    def fresh_namespace() -> dict:
        ns.clear()
        ns.update({"__name__": "__main__", "__builtins__": builtins})
        exec(compile(job.get("prelude") or "", "<prelude>", "exec"), ns)
        return ns

    # The prelude (trusted, not secret: e.g. HumanEval's prompt) runs before the fork for the
    # same reason: its imports are the program's imports.
    prelude_error = None
    try:
        fresh_namespace()
    except Exception as e:
        prelude_error = f"the test prelude failed: {_fmt_exc(e)}"
    prelude_names = {k for k in ns if not (k.startswith("__") and k.endswith("__"))}
    # 1. The solution process, forked while this process holds no secret.
    conn = _spawn_solution(program, max_bytes, (chan, secret), fresh=False)
    # 2. Only now the secrets.
    sec = loads(_read_all(secret))
    os.close(secret)
    nonce, units = sec["nonce"], sec["units"]
    restarts = 0
    load_error = None

    def load(c: SolutionConn):
        """Wait for the program to load, bind what it defines, run the trusted test setup."""
        nonlocal load_error
        try:
            ready = _recv_frame(c.rep_fd, cap(time.monotonic() + load_timeout), max_bytes)
        except ChildGone as e:
            c.kill()
            load_error = f"the program did not load: {e}"
            return False
        if type(ready) is not dict or not ready.get("ready") or type(ready.get("names")) is not dict:
            err = ready.get("error") if type(ready) is dict else None
            c.kill()
            load_error = f"the program failed to load: {str(err)[:500]}" if err else "the program did not load"
            return False
        names = ready["names"]
        # The tests' functions under test are the program's names they call. A program name
        # that shadows a builtin (`def sum(a, b)`) counts as one only if the tests call no other
        # program name: otherwise it is a builtin the tests use to check (`set(f(x)) == ...`),
        # and the program must not be able to replace it.
        own_called = {n for n in called if n in names and n not in _BUILTIN_NAMES}
        for name, wire in names.items():
            # Names come from the program's process: only identifiers, never dunders.
            if type(name) is not str or not name.isidentifier() or name.startswith("__"):
                continue
            if expose is not None and name not in expose:
                continue
            if expose is None and name in prelude_names:
                continue
            if expose is None and name in _BUILTIN_NAMES and (own_called or name not in called):
                continue
            try:
                ns[name] = _bind(name, wire, c, module_uses)
            except (WireError, ImportError, AttributeError, TypeError, ValueError, RecursionError):
                continue
        try:
            exec(compile(job.get("setup") or "", "<test setup>", "exec"), ns)
        except Exception as e:
            load_error = f"test setup failed: {_fmt_exc(e)}"
            return False
        load_error = None
        return True

    # Names the tests use as `name.attr`: if such a name is a stdlib module, the tests mean the
    # module (e.g. `math.isclose`), never an object of the same name that the program made.
    test_source = "\n".join([job.get("setup") or ""] + [u for u in units if isinstance(u, str)])
    module_uses, called = _dotted_names(test_source), _called_names(test_source)
    loaded = load(conn)
    if prelude_error:
        loaded, load_error = False, prelude_error
    results = []
    split = bool(job.get("split_asserts"))
    for unit in units:
        if cap.expired():
            # The verdict is due: what has not run fails, and the verdict still goes out.
            results.append({"ok": False, "error": OUT_OF_TIME, "asserts": None, "completed": False, "seconds": 0.0})
            continue
        if loaded and not conn.alive:
            # The last test killed it (timeout, crash): a fresh process that never saw the tests.
            conn.kill()
            restarts += 1
            conn = _spawn_solution(program, max_bytes, (chan,), fresh=True)
            conn.generation = restarts
            fresh_namespace()
            loaded = load(conn)
        res = {"ok": False, "error": None, "asserts": None, "completed": False, "seconds": 0.0}
        t0 = time.monotonic()
        if not loaded:
            res["error"] = load_error
            results.append(res)
            continue
        try:
            if split:
                code, n = _split_asserts(unit)
                rec = _Recorder(n, conn, unit_timeout, cap)
                ns["__qrl_record__"] = rec
            else:
                code, rec = compile(unit, "<test>", "exec"), None
            conn.deadline = cap(t0 + unit_timeout)
            exec(code, ns)
            res["completed"] = True
            res["ok"] = rec is None or all(r is not False for r in rec.results)
        except ChildGone as e:
            res["error"] = f"solution process: {e}"
        except AssertionError as e:
            res["error"] = "AssertionError" + (f": {_fmt_exc(e)}" if str(e) else "")
        except Exception as e:
            res["error"] = _fmt_exc(e)
        finally:
            conn.deadline = None
        if split:
            res["asserts"] = rec.results
        res["seconds"] = round(time.monotonic() - t0, 6)
        results.append(res)
        _reap_orphans()
    conn.kill()
    _emit(chan, {"event": "verdict", "mode": "calls", "nonce": nonce, "units": results, "load_error": load_error, "restarts": restarts})
    os.close(chan)
    _flush_and_exit(0)


# --------------------------------------------------------------------------------------------
# io mode


def _run_case(program: str, stdin_data: bytes, timeout: float, max_out: int, close_fds) -> dict:
    inp = os.memfd_create("stdin", 0) if hasattr(os, "memfd_create") else None
    if inp is None:
        import tempfile

        tf = tempfile.TemporaryFile()
        inp = os.dup(tf.fileno())
        tf.close()
    _write_all(inp, stdin_data)
    os.lseek(inp, 0, os.SEEK_SET)
    out_r, out_w = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            for fd in close_fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            os.setpgid(0, 0)
            _become_program(PROGRAM_DIR, PROGRAM_HOME)
            os.close(out_r)
            os.dup2(inp, 0)
            os.dup2(out_w, 1)
            os.close(inp)
            os.close(out_w)
            sys.stdin = open(0, "r", closefd=False)
            sys.stdout = open(1, "w", closefd=False)
            status = run_as_main(program, "<solution>")
            _flush_and_exit(status)
        finally:
            os._exit(70)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass
    os.close(inp)
    os.close(out_w)
    buf = bytearray()
    status = None
    deadline = t0 + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            status = "timeout"
            break
        r, _, _ = select.select([out_r], [], [], left)
        if not r:
            continue
        b = os.read(out_r, 1 << 16)
        if not b:
            break
        buf += b
        if len(buf) > max_out:
            status = "output-limit"
            del buf[max_out:]
            break
    os.close(out_r)
    if status is not None:
        try:
            os.killpg(pid, SIGKILL)
        except OSError:
            pass
    # stdout closed: the program is exiting; give it the rest of its time to finish.
    code = None
    while True:
        wpid, wstatus = os.waitpid(pid, os.WNOHANG)
        if wpid:
            break
        if time.monotonic() > deadline:
            status = status or "timeout"
            try:
                os.killpg(pid, SIGKILL)
            except OSError:
                pass
            os.waitpid(pid, 0)
            wstatus = None
            break
        time.sleep(0.001)
    sig = None
    if wstatus is not None:
        if os.WIFEXITED(wstatus):
            code = os.WEXITSTATUS(wstatus)
        elif os.WIFSIGNALED(wstatus):
            sig = os.WTERMSIG(wstatus)
    if status is None:
        status = "ok" if code == 0 else ("killed" if sig is not None else "failed")
    # Reap the process group's leftovers (daemons the program started) before the next case.
    try:
        os.killpg(pid, SIGKILL)
    except OSError:
        pass
    return {
        "status": status,
        "exit_code": code,
        "signal": sig,
        "stdout": buf.decode("utf-8", "replace"),
        "seconds": round(time.monotonic() - t0, 6),
    }


def mode_io(job: dict, chan: int, secret: int) -> None:
    _emit(chan, {"event": "started"})
    cases = []
    cap = _verdict_deadline(job)
    # Every case runs before the secret fd is read: no case process can inherit the nonce.
    for inp in job["inputs"]:
        now = time.monotonic()
        timeout = cap(now + float(job["case_timeout_s"])) - now
        if timeout <= 0:
            cases.append({"status": "timeout", "exit_code": None, "signal": None, "stdout": "", "seconds": 0.0, "error": OUT_OF_TIME})
            continue
        cases.append(_run_case(job["program"], inp.encode(), timeout, int(job["max_output_bytes"]), (chan, secret)))
        _reap_orphans()
    nonce = loads(_read_all(secret))["nonce"]
    os.close(secret)
    _emit(chan, {"event": "verdict", "mode": "io", "nonce": nonce, "cases": cases})
    os.close(chan)
    _flush_and_exit(0)


def main(argv) -> None:
    global STARTED
    STARTED = time.monotonic()
    mode = argv[1]
    job_fd, chan, secret = int(argv[2]), int(argv[3]), int(argv[4])
    if mode == "child":
        mode_child(job_fd)
        return
    _enter_grader()
    job = loads(_read_all(job_fd))
    os.close(job_fd)
    {"exec": mode_exec, "calls": mode_calls, "io": mode_io}[mode](job, chan, secret)


if __name__ == "__main__":
    main(sys.argv)
