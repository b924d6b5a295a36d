"""Posting hooks from a background thread, the way amoCRM does, with the faults users report.

Each subscription has a lane: the changes queued for it, in order, and the posts waiting to be
re-sent. One dispatcher thread (started on the first queued change, gone when nothing is left)
decides what is due; the posts themselves run on a small pool, one at a time per lane, so a
destination that hangs for its 2 s delays only its own hooks. Every post (sent, failed, lost,
or sent twice) is recorded for the admin API (`deliveries()`).

Lock order: the account lock → `Webhooks.lock` → the dispatcher's condition; nothing here takes
the first two while holding the third.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from sync.emulator.hook_controls import HookControls
from sync.emulator.hook_payload import Pairs, form_body

if TYPE_CHECKING:
    from sync.emulator.webhooks import Webhooks

MAX_RECORDS = 10_000
POOL_THREADS = 8
USER_AGENT = "amoCRM-Webhooks/3.0 (emulator)"


@dataclass(frozen=True)
class Entry:
    """One changed contact, as its hook will carry it."""

    change: str  # add | update | delete | restore | responsible
    contact_id: int
    pairs: Pairs


@dataclass
class _Post:
    entries: list[Entry]
    attempt: int = 1
    failed_at: float = 0.0  # monotonic; re-sent `retry_after_s` later (as the knob is then)


@dataclass
class _Lane:
    queue: deque[tuple[float, Entry]] = field(default_factory=deque)  # (queued at, entry)
    retries: list[_Post] = field(default_factory=list)
    busy: bool = False


class Dispatcher:
    """Queues, batches and posts the hooks of one account's subscriptions."""

    def __init__(self, hooks: Webhooks, controls: HookControls, *, seed: int = 0) -> None:
        self._hooks = hooks
        self._controls = controls
        self._cond = threading.Condition()
        self._lanes: dict[int, _Lane] = {}
        self._random = random.Random(seed)  # noqa: S311 - simulated faults, repeatable
        self._records: deque[dict[str, Any]] = deque(maxlen=MAX_RECORDS)
        self._seq = 0
        self._in_flight = 0
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._http: httpx.Client | None = None
        self._stopped = False

    # --- controls ------------------------------------------------------------------------------

    def controls(self) -> HookControls:
        with self._cond:
            return self._controls

    def set_controls(self, changes: dict[str, Any]) -> HookControls:
        with self._cond:
            self._controls = self._controls.changed(changes)
            self._cond.notify_all()
            return self._controls

    # --- queueing ------------------------------------------------------------------------------

    def enqueue(self, hook_ids: list[int], entry: Entry) -> None:
        now = time.monotonic()
        with self._cond:
            if self._stopped:
                return
            for hook_id in hook_ids:
                self._lanes.setdefault(hook_id, _Lane()).queue.append((now, entry))
            self._start()
            self._cond.notify_all()

    def forget(self, hook_id: int) -> None:
        """Drop what waits for a hook that is gone or disabled."""
        with self._cond:
            self._lanes.pop(hook_id, None)
            self._cond.notify_all()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until nothing is queued, waiting for a re-send or in flight (True), or until
        `timeout` seconds passed (False)."""
        with self._cond:
            return self._cond.wait_for(self._idle, timeout)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._lanes.clear()
            self._cond.notify_all()
            pool, http = self._pool, self._http
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        if http is not None:
            http.close()

    def _idle(self) -> bool:
        busy = any(lane.queue or lane.retries or lane.busy for lane in self._lanes.values())
        return not busy and self._in_flight == 0

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="emulator-hooks", daemon=True)
            self._thread.start()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="emulator-hook")
            self._http = httpx.Client(trust_env=False, follow_redirects=False,
                                      headers={"User-Agent": USER_AGENT})  # fmt: skip

    # --- the dispatcher thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    self._thread = None
                    return
                ready, wait = self._due(time.monotonic())
                if not ready and wait is None and self._in_flight == 0:
                    idle = self._go_idle()  # the next change starts another thread
                    break
                if not ready:
                    self._cond.wait(timeout=min(wait if wait is not None else 1.0, 1.0))
                    continue
                self._in_flight += len(ready)
                pool = self._pool
            assert pool is not None
            for hook_id, post in ready:
                pool.submit(self._deliver, hook_id, post)
        pool, http = idle
        if pool is not None:
            pool.shutdown(wait=False)
        if http is not None:
            http.close()

    def _go_idle(self) -> tuple[ThreadPoolExecutor | None, httpx.Client | None]:
        """Nothing left to do (called holding the condition): hand back the pool and the HTTP
        client to close, so no thread or socket stays open until the next change."""
        idle = self._pool, self._http
        self._thread, self._pool, self._http = None, None, None
        self._cond.notify_all()
        return idle

    def _due(self, now: float) -> tuple[list[tuple[int, _Post]], float | None]:
        """Posts that may leave now (marking their lanes busy), and how long until the next."""
        controls, ready, wait = self._controls, [], None
        for hook_id, lane in self._lanes.items():
            if lane.busy:
                continue
            post, until = _next_post(lane, now, controls)
            if post is not None:
                lane.busy = True
                ready.append((hook_id, post))
            elif until is not None:
                wait = until if wait is None else min(wait, until)
        return ready, wait

    # --- one post ------------------------------------------------------------------------------

    def _deliver(self, hook_id: int, post: _Post) -> None:
        retry: _Post | None = None
        try:
            retry = self._attempt(hook_id, post)
        finally:
            self._done(hook_id, retry)

    def _attempt(self, hook_id: int, post: _Post) -> _Post | None:
        destination = self._hooks.destination_of(hook_id)
        if destination is None:  # unsubscribed or disabled meanwhile: never sent
            return None
        controls = self.controls()
        settings = self._hooks.account.settings
        body = form_body([(e.change, e.pairs) for e in post.entries],
                         settings.account_id, settings.subdomain)  # fmt: skip
        facts: dict[str, Any] = {"destination": destination, "duplicate": False,
                                 "disabled_hook": False, "status": None, "error": None}  # fmt: skip
        if self._chance(controls.loss_rate):
            self._record(hook_id, post, body, **facts, outcome="lost")
            return None
        status, error = self._post(destination, body, controls.timeout_s)
        ok = status is not None and 200 <= status < 300
        disabled = not ok and self._hooks.failed(hook_id, time.monotonic(), controls)
        facts |= {"status": status, "error": error, "disabled_hook": disabled}
        self._record(hook_id, post, body, **facts, outcome="delivered" if ok else "failed")
        if self._chance(controls.duplicate_rate):
            again, again_error = self._post(destination, body, controls.timeout_s)
            again_ok = again is not None and 200 <= again < 300
            facts |= {"status": again, "error": again_error, "duplicate": True,
                      "disabled_hook": False}  # fmt: skip
            self._record(hook_id, post, body, **facts,
                         outcome="delivered" if again_ok else "failed")  # fmt: skip
        if ok or disabled or not controls.retry or post.attempt >= controls.max_attempts:
            return None
        return _Post(post.entries, post.attempt + 1, time.monotonic())

    def _post(
        self, destination: str, body: bytes, timeout_s: float
    ) -> tuple[int | None, str | None]:
        http = self._http
        if http is None:
            return None, "stopped"
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        try:
            response = http.post(destination, content=body, headers=headers, timeout=timeout_s)
        except httpx.TimeoutException:
            return None, "timeout"
        except httpx.ConnectError:
            return None, "connection refused"
        except (httpx.HTTPError, RuntimeError) as exc:  # RuntimeError: client closed by stop()
            return None, type(exc).__name__
        return response.status_code, None

    def _done(self, hook_id: int, retry: _Post | None) -> None:
        with self._cond:
            self._in_flight -= 1
            lane = self._lanes.get(hook_id)
            if lane is not None:
                lane.busy = False
                if retry is not None:
                    lane.retries.append(retry)
                    lane.retries.sort(key=lambda p: p.failed_at)
                if self._hooks_disabled(hook_id):
                    self._lanes.pop(hook_id, None)
            if not self._stopped:
                self._start()
            self._cond.notify_all()

    def _hooks_disabled(self, hook_id: int) -> bool:
        # called under the condition: Webhooks.lock must not be taken here (lock order), so
        # read the flag without it (a stale answer only delays the drop to the next post)
        hook = self._hooks.hooks.get(hook_id)
        return hook is None or hook.disabled

    def _chance(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self._cond:
            return self._random.random() < rate

    # --- the record ------------------------------------------------------------------------------

    def _record(self, hook_id: int, post: _Post, body: bytes, **facts: Any) -> None:
        """One post: `destination`, `outcome` (delivered | failed | lost), `status`, `error`,
        `duplicate` (the second send of a post), `disabled_hook` (this failure disabled it)."""
        with self._cond:
            self._seq += 1
            self._records.append({
                "seq": self._seq, "webhook_id": hook_id, "sent_at": time.time(),
                "attempt": post.attempt, **facts,
                "entities": [{"event": e.change, "id": e.contact_id} for e in post.entries],
                "body": body.decode("ascii"),
            })  # fmt: skip

    def deliveries(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._records)

    def clear_deliveries(self) -> None:
        with self._cond:
            self._records.clear()

    def counts(self) -> dict[str, int]:
        with self._cond:
            records = list(self._records)
            queued = sum(len(lane.queue) for lane in self._lanes.values())
            retrying = sum(len(lane.retries) for lane in self._lanes.values())
        return {
            "delivered": sum(1 for r in records if r["outcome"] == "delivered"),
            "failed": sum(1 for r in records if r["outcome"] == "failed"),
            "lost": sum(1 for r in records if r["outcome"] == "lost"),
            "duplicates": sum(1 for r in records if r["duplicate"]),
            "queued": queued,
            "retrying": retrying,
        }


def _next_post(
    lane: _Lane, now: float, controls: HookControls
) -> tuple[_Post | None, float | None]:
    """The lane's next post if it is due (a re-send first), else how long until one is."""
    if lane.retries:
        due = lane.retries[0].failed_at + controls.retry_after_s
        if due <= now:
            return lane.retries.pop(0), None
        until: float | None = due - now
    else:
        until = None
    if lane.queue:
        ready_at = lane.queue[0][0] + (controls.delay_ms + controls.batch_window_ms) / 1000
        if ready_at <= now:
            count = min(controls.batch_max, len(lane.queue))
            return _Post([lane.queue.popleft()[1] for _ in range(count)]), None
        until = ready_at - now if until is None else min(until, ready_at - now)
    return None, until
