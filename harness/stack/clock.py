"""The process seam's ``clock_skew``: the functions' clock off by ``ms`` while the rule lasts.

On AWS only a function's host clock can be wrong; API Gateway, DynamoDB (its TTL), EventBridge and
the stream's poller keep the right time. Here, while ``install()`` is in force, the clock readings
below are patched process-wide and answer ``real + ms`` only to code that runs inside an in-process
handler invocation (``current_invocation`` is set: the handler's thread and the work it hands to a
``concurrent.futures`` pool) of a stack whose plan has the rule (``clock_plan``), during the rule's
span; every other caller, and the harness's own code running on a handler's thread (its logs, the
fault log, the seams' hooks), gets the real time. Patched:

- ``time.time``, ``time.time_ns``, and ``time.gmtime``/``localtime``/``ctime``/``strftime`` without
  an explicit time;
- ``datetime.datetime.now``/``utcnow``/``today``: ``datetime.datetime`` is replaced by a subclass
  (``isinstance`` with it still accepts every datetime).

Not patched, plainly: ``time.monotonic``/``perf_counter`` (a host's wrong wall clock does not move
them either), ``datetime.date.today``, C extensions that read the clock themselves, and names bound
before ``install()`` (``from time import time``, ``from datetime import datetime`` in a module
imported earlier keep the real clock; handlers are imported at their first invocation, after it).
botocore reads the clock through ``datetime`` for request signatures, so a handler's requests are
signed with its skewed time, as on AWS, where a skew over 5 minutes makes every AWS call fail with a
signature error; the local store does not check signatures, so here such calls still succeed.

Zero cost when no plan has the rule: ``install`` is not called and nothing is patched.
"""

from __future__ import annotations

import contextvars
import datetime as _datetime_module
import sys
import threading
import time
from typing import Any

from ..faults.plan import FaultPlan
from .logs import current_invocation

# The plan of the stack whose in-process function is being invoked, when that plan has a clock_skew rule.
clock_plan: contextvars.ContextVar[FaultPlan | None] = contextvars.ContextVar("clock_plan", default=None)

_STACK_CODE = "harness."  # the harness's own modules are the stack: never skewed
_real_time, _real_time_ns = time.time, time.time_ns
_real_gmtime, _real_localtime, _real_ctime, _real_strftime = time.gmtime, time.localtime, time.ctime, time.strftime
_real_datetime = _datetime_module.datetime
_installed = 0
_lock = threading.Lock()


def real_time() -> float:
    """The real ``time.time()``, patched or not (for the runtime's own bookkeeping)."""
    return _real_time()


def _skew_s() -> float:
    """The skew in seconds for whoever called the patched clock reading (two frames up); 0 outside a
    skewed invocation, for the harness's own code and outside the rule's span."""
    plan = clock_plan.get()
    if plan is None or current_invocation.get() is None:
        return 0.0
    if sys._getframe(2).f_globals.get("__name__", "").startswith(_STACK_CODE):
        return 0.0
    rule = plan.ongoing("clock_skew")  # logged once, the first time a handler reads the skewed clock
    return rule.params["ms"] / 1000 if rule is not None else 0.0


def _time() -> float:
    return _real_time() + _skew_s()


def _time_ns() -> int:
    return _real_time_ns() + int(_skew_s() * 1e9)


def _gmtime(secs: float | None = None) -> time.struct_time:
    return _real_gmtime(_real_time() + _skew_s() if secs is None else secs)


def _localtime(secs: float | None = None) -> time.struct_time:
    return _real_localtime(_real_time() + _skew_s() if secs is None else secs)


def _ctime(secs: float | None = None) -> str:
    return _real_ctime(_real_time() + _skew_s() if secs is None else secs)


def _strftime(format: str, t: Any = None) -> str:
    return _real_strftime(format, _real_localtime(_real_time() + _skew_s()) if t is None else t)


class _AnyDatetime(type):
    """``isinstance(x, datetime.datetime)`` stays true for every datetime while the subclass stands in."""

    def __instancecheck__(cls, instance: Any) -> bool:
        return isinstance(instance, _real_datetime)

    def __subclasscheck__(cls, subclass: type) -> bool:
        return issubclass(subclass, _real_datetime)


class _SkewedDatetime(_real_datetime, metaclass=_AnyDatetime):
    @classmethod
    def now(cls, tz: _datetime_module.tzinfo | None = None) -> Any:
        skew = _skew_s()
        moment = super().now(tz)
        return moment + _datetime_module.timedelta(seconds=skew) if skew else moment

    @classmethod
    def utcnow(cls) -> Any:
        skew = _skew_s()
        moment = super().utcnow()
        return moment + _datetime_module.timedelta(seconds=skew) if skew else moment

    @classmethod
    def today(cls) -> Any:
        skew = _skew_s()
        moment = super().today()
        return moment + _datetime_module.timedelta(seconds=skew) if skew else moment


_PATCHES: tuple[tuple[Any, str, Any, Any], ...] = (
    (time, "time", _real_time, _time), (time, "time_ns", _real_time_ns, _time_ns),
    (time, "gmtime", _real_gmtime, _gmtime), (time, "localtime", _real_localtime, _localtime),
    (time, "ctime", _real_ctime, _ctime), (time, "strftime", _real_strftime, _strftime),
    (_datetime_module, "datetime", _real_datetime, _SkewedDatetime),
)


def install() -> None:
    """Patch the clock readings (counted: a second stack in the process shares the patch)."""
    global _installed
    with _lock:
        _installed += 1
        if _installed == 1:
            for owner, name, _, patched in _PATCHES:
                setattr(owner, name, patched)


def uninstall() -> None:
    """Undo one ``install``; the last one puts the real clock back."""
    global _installed
    with _lock:
        if _installed == 0:
            return
        _installed -= 1
        if _installed == 0:
            for owner, name, real, _ in _PATCHES:
                setattr(owner, name, real)
