"""``rtscore infra up|down|status``: start, reuse, inspect and stop the local Kafka and Redis.

Nothing is started when a healthy service already answers on the configured port or when the
configured host is not this machine; ``down`` stops only processes whose pid files we wrote.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, replace

from streams.errors import InfraError
from streams.localinfra.kafka import KafkaBroker
from streams.localinfra.process import (
    is_alive,
    locked,
    owned_pid,
    port_bindable,
    port_open,
    remove_pid,
    rotate,
    spawn_detached,
    tail,
    terminate,
    write_pid,
)
from streams.localinfra.redis import RedisServer
from streams.localinfra.service import (
    LocalService,
    Log,
    Probe,
    ServiceStatus,
    address,
    bind_host,
)
from streams.settings import Settings, is_loopback

logger = logging.getLogger(__name__)

STOP_GRACE_S = 20.0
LOG_TAIL_LINES = 20


def up(settings: Settings, *, log: Log = print) -> list[ServiceStatus]:
    """Start whatever is not already answering; returns once every service answers."""
    services = _services(settings)
    with contextlib.ExitStack() as stack:
        for svc in services:
            if is_loopback(svc.host):
                stack.enter_context(locked(svc.state_dir / "launcher.lock"))
        # Every conflict is reported before anything is started.
        plans = [_plan(svc) for svc in services]
        return [_carry_out(svc, plan, log) for svc, plan in zip(services, plans, strict=True)]


def down(settings: Settings, *, log: Log = print) -> list[ServiceStatus]:
    """Stop the services rtscore started; leave everything else running."""
    statuses = []
    for svc in _services(settings):
        if not is_loopback(svc.host):
            statuses.append(_observe(svc))
            continue
        with locked(svc.state_dir / "launcher.lock"):
            statuses.append(_stop(svc, log))
    return statuses


def status(settings: Settings) -> list[ServiceStatus]:
    """How each service is doing now; changes nothing."""
    return [_observe(svc) for svc in _services(settings)]


def _services(settings: Settings) -> list[LocalService]:
    return [KafkaBroker(settings), RedisServer(settings)]


@dataclass(frozen=True)
class _Plan:
    action: str  # "keep" (status is final) | "await" (our process, maybe starting) | "start"
    status: ServiceStatus | None = None
    pid: int | None = None


def _plan(svc: LocalService) -> _Plan:
    if not is_loopback(svc.host):
        probe = svc.probe(svc.port)
        if probe.healthy:
            return _Plan("keep", _external(svc, probe, "not on this machine: checked, not managed"))
        raise InfraError(
            f"{svc.product} at {address(svc.host, svc.port)} does not answer ({probe.detail}); "
            f"rtscore starts one only on this machine",
            hint=f"start it, or set {svc.env_var} to a reachable one, or to 127.0.0.1:{svc.port} "
            f"so that `rtscore infra up` starts one here",
        )
    pid = owned_pid(svc.pid_file, *svc.markers)
    if pid is not None:
        served = svc.served_port()
        if served is not None and served != svc.port:
            raise InfraError(
                f"the {svc.product} rtscore started (pid {pid}) listens on port {served}, "
                f"not on {svc.port} as configured",
                hint=f"run `rtscore infra down` first, or set {svc.env_var} to port {served}",
            )
        return _Plan("await", pid=pid)
    if port_open(svc.host, svc.port):
        probe = svc.probe(svc.port)
        if probe.healthy:
            return _Plan("keep", _external(svc, probe, "not started by rtscore: reused as is"))
        raise InfraError(
            f"port {svc.port} on {svc.host} is taken by something that is not a healthy "
            f"{svc.product} ({probe.detail})",
            hint=f"find it with `ss -ltnp 'sport = :{svc.port}'` and stop it, "
            f"or set {svc.env_var} to another port",
        )
    for port, purpose in [(svc.port, f"the {svc.product}'s port"), *svc.other_ports()]:
        if not port_bindable(bind_host(svc.host), port):
            raise InfraError(
                f"port {port} ({purpose}) on {svc.host} is held by another process",
                hint=f"find it with `ss -ltnp 'sport = :{port}'` and stop it, "
                f"or set {svc.env_var} to another port",
            )
    svc.check_prerequisites()
    return _Plan("start")


def _carry_out(svc: LocalService, plan: _Plan, log: Log) -> ServiceStatus:
    if plan.status is not None:
        log(f"{svc.name}: {plan.status.state} on {plan.status.address} ({plan.status.detail})")
        return plan.status
    if plan.pid is not None:
        probe = _await_ready(svc, plan.pid, kill_on_timeout=False)
        log(f"{svc.name}: already running on {address(svc.host, svc.port)} (pid {plan.pid})")
        return _ours(svc, plan.pid, probe, "already running (started by rtscore)")
    rotate(svc.log_path)
    argv = svc.prepare(log)
    started = time.monotonic()
    pid = spawn_detached(argv, log_path=svc.log_path)
    write_pid(svc.pid_file, pid)
    budget = svc.ready_timeout_s
    log(f"{svc.name}: started pid {pid}; waiting up to {budget:g} s for it to answer")
    probe = _await_ready(svc, pid, kill_on_timeout=True)
    elapsed = time.monotonic() - started
    log(f"{svc.name}: ready on {address(svc.host, svc.port)} in {elapsed:.1f} s")
    status = _ours(svc, pid, probe, f"started in {elapsed:.1f} s")
    return replace(status, startup_s=elapsed)


def _await_ready(svc: LocalService, pid: int, *, kill_on_timeout: bool) -> Probe:
    deadline = time.monotonic() + svc.ready_timeout_s
    while True:
        if not is_alive(pid):
            remove_pid(svc.pid_file)
            raise InfraError(
                f"the {svc.product} (pid {pid}) exited during start-up",
                hint=_log_hint(svc),
            )
        if port_open(svc.host, svc.port):
            probe = svc.probe(svc.port)
            if probe.healthy:
                return probe
            logger.debug("%s not ready yet: %s", svc.name, probe.detail)
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if kill_on_timeout:
        terminate(pid, grace_s=STOP_GRACE_S)
        remove_pid(svc.pid_file)
        what = "stopped it"
    else:
        what = "it is still running: `rtscore infra down`, then `up` again"
    raise InfraError(
        f"the {svc.product} (pid {pid}) did not answer on {address(svc.host, svc.port)} "
        f"within {svc.ready_timeout_s:g} s; {what}",
        hint=_log_hint(svc),
    )


def _stop(svc: LocalService, log: Log) -> ServiceStatus:
    pid = owned_pid(svc.pid_file, *svc.markers)
    if pid is None:
        observed = _observe(svc)
        if observed.state == "external":
            return replace(observed, detail="not started by rtscore: left running")
        return observed
    addr = address(svc.host, svc.served_port() or svc.port)
    log(f"{svc.name}: stopping pid {pid} on {addr}")
    took = terminate(pid, grace_s=STOP_GRACE_S)
    remove_pid(svc.pid_file)
    log(f"{svc.name}: stopped in {took:.1f} s")
    detail = f"stopped pid {pid} in {took:.1f} s"
    return ServiceStatus(svc.name, addr, "stopped", None, None, svc.log_path, detail)


def _observe(svc: LocalService) -> ServiceStatus:
    local = is_loopback(svc.host)
    pid = owned_pid(svc.pid_file, *svc.markers, remove_stale=False) if local else None
    port = (svc.served_port() or svc.port) if pid is not None else svc.port
    probe = svc.probe(port)
    if pid is not None:
        if probe.healthy:
            note = "" if port == svc.port else f" (settings say port {svc.port})"
            return _ours(svc, pid, probe, f"started by rtscore{note}", port=port)
        detail = f"our process is alive but does not answer ({probe.detail}): starting, or hung"
        return _ours(svc, pid, probe, detail, port=port, state="unhealthy")
    if probe.healthy:
        why = "not started by rtscore" if local else "not on this machine: checked, not managed"
        return _external(svc, probe, why)
    addr = address(svc.host, port)
    if local and not probe.listening:
        log_path = svc.log_path if svc.log_path.exists() else None
        return ServiceStatus(svc.name, addr, "stopped", None, None, log_path, probe.detail)
    return ServiceStatus(svc.name, addr, "unhealthy", None, None, None, probe.detail)


def _ours(
    svc: LocalService,
    pid: int,
    probe: Probe,
    detail: str,
    *,
    port: int | None = None,
    state: str = "running",
) -> ServiceStatus:
    version = probe.version or svc.running_version(pid)
    addr = address(svc.host, port or svc.port)
    return ServiceStatus(svc.name, addr, state, pid, version, svc.log_path, detail)


def _external(svc: LocalService, probe: Probe, why: str) -> ServiceStatus:
    detail = f"{why}; {probe.detail}"
    addr = address(svc.host, svc.port)
    return ServiceStatus(svc.name, addr, "external", None, probe.version, None, detail)


def _log_hint(svc: LocalService) -> str:
    lines = tail(svc.log_path, LOG_TAIL_LINES) or "(empty)"
    return f"the last lines of {svc.log_path}:\n{lines}"
