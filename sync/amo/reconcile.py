"""After a write's answer was lost: find out, by reading, which entities amoCRM applied.

Creates (the dangerous case: a blind retry makes a duplicate contact). amoCRM has no idempotency
key and forgets `request_id`, and its filters may be silently ignored, so:
1. before the first POST of a call, note the newest contact id (`newest_contact_id`, one GET
   ordered by id desc, asked again on a 204 and never read as 0 from one) — every contact
   created by this call has a larger id;
2. after a lost answer, read contacts ordered by id desc down to that floor, checking the order
   on our side (a server that ignores `order` makes reconciliation impossible: we then refuse to
   resend rather than risk a duplicate);
3. match what was sent to contacts above the floor, not already claimed by this call, by content
   (`sync.amo.matching`), and only to contacts our own user created (`own_user_id`, when
   amoCRM tells it: a person's look-alike contact is never adopted). Lists lag writes (~1 s,
   amocrm-api.md §11.4), so while some are missing, look again after 1, 2, 3, 4 x `settle_s`
   (looks at 0, 1, 3, 6, 10 x `settle_s`): only a create still invisible `CONFIRM_SETTLES` x
   `settle_s` (10 s by default, many times any lag seen) after its answer was lost is taken as
   not applied, and the caller resends it — unless the last look shows contacts that nothing
   explains (not matched, not claimed, made by our own user or, when it is unknown, by
   anyone): one may be ours, edited since (an automation renames new contacts within a
   second), so none is resent (`CreatesUnexplainedError`: they wait as unconfirmed).
   A look-up page that lists nothing where it cannot be
   empty (amoCRM's spurious 204s) is asked again, then not believed (`EmptyAnswerError`): a
   look that ends so is skipped, and when it is the last one nothing is resent.
4. a server that ignores `order[id]` has no floor: the contacts created around the send are
   read with `filter[created_at]` instead (`sync.amo.created`: trusted only when the answer
   shows the filter honoured and amoCRM's clock near ours), and matched the same way. When that
   read cannot be trusted either, `InvariantError`: the caller resends nothing.

Updates: re-read the ids; an entity whose fields already read back as sent (values in the order
sent, but for a multiselect's) is done; a few the list may show lagging are read by id, many are
listed again as a lost create is looked for (`find_updated`).
Chat links: read the links of the contacts; a pair already linked is done.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sync.amo.backoff import pause as wait
from sync.amo.created import ASKS, EmptyAnswerError, Reasker, Sent, created_between
from sync.amo.matching import carries, made_by, pair_created
from sync.amo.numbers import as_int
from sync.amo.pages import Page, iter_pages
from sync.amo.writes import CreatesUnexplainedError, Item, WriteResult, to_result
from sync.errors import AmoError, AmoStoppedError, InvariantError
from sync.logs import get_logger

if TYPE_CHECKING:
    from sync.amo.client import AmoClient

log = get_logger("sync.amo.reconcile")

CONTACTS = "/api/v4/contacts"
MAX_SCAN_PAGES = 20  # 5,000 contacts created since the call began: beyond that, give up loudly
CONFIRM_SETTLES = 10  # a create unseen this many `settle_s` after its send was not applied
LAG_LOOKS = 4  # list looks after a lost PATCH answer, 1..4 x settle_s apart: 10 x in all
BY_ID_MAX = 5  # contacts left unsure after a lost PATCH answer that are read each by id


def confirm_window_s(settle_s: float) -> float:
    """How long a create must stay invisible in amoCRM's lists to be taken as not applied."""
    return CONFIRM_SETTLES * settle_s


def newest_contact_id(client: AmoClient) -> int | None:
    """The largest contact id now, or None when there is no floor to trust: the server does not
    honour `order[id]=desc`, or the list kept answering 204. A 204 is asked again (`Reasker`)
    and never taken for an empty account (a floor of 0): amoCRM answers 204 now and then for a
    list that is not empty, and below a floor of 0 every contact of the account is a candidate
    for a lost create (an older look-alike of ours was taken for it). Without a floor, the
    look-up is by `filter[created_at]` around the send (`sync.amo.created`)."""
    asking = Reasker(client, client.get)
    reply = asking.fetch(CONTACTS, {"order": {"id": "desc"}, "limit": 2, "page": 1})
    if asking.empty is not None:  # a spurious 204 that persisted, or an empty account
        log.warning("amo_floor_unknown", reason="empty_answer", asks=ASKS)
        return None
    ids = _ids(reply.data)
    if ids != sorted(ids, reverse=True):
        log.warning("amo_order_ignored", path=CONTACTS, order="id desc")
        return None
    return ids[0]


def own_user_id(client: AmoClient) -> int | None:
    """The user whose token makes our calls (`current_user_id` of `/api/v4/account`): the
    `created_by` of every contact we create. Read once per client, when a lost create is first
    looked up (never on the hot path); None when amoCRM does not tell it (the account read
    fails, or names no user): creates are then matched by content alone, as before."""
    if client.own_user is None:
        try:
            user = client.fetch_account().get("current_user_id")
        except (AmoError, InvariantError) as exc:
            if isinstance(exc, AmoStoppedError):
                raise
            log.warning("amo_own_user_unknown", error=str(exc))
            return None
        try:
            client.own_user = max(int(user), 0) if user not in (None, "") else 0
        except (TypeError, ValueError):
            client.own_user = 0
    return client.own_user or None


def _ids(data: Any) -> list[int]:
    items = data.get("_embedded", {}).get("contacts", []) if isinstance(data, Mapping) else []
    return [int(c["id"]) for c in items]


def find_created(
    client: AmoClient,
    batch: list[Item],
    floor: int | None,
    claimed: set[int],
    settle_s: float,
    *,
    window_s: float | None = None,
    sent: Sent | None = None,
) -> dict[str, WriteResult]:
    """Results for the entities of `batch` that amoCRM did create (see the module docstring):
    looks until all are found or `window_s` (default `confirm_window_s(settle_s)`; 0 = one
    look) has passed since the first look, pausing on the client's clock in between. Without a
    `floor`, looks by `filter[created_at]` around `sent`; `InvariantError` when it cannot look.
    The ids found are added to `claimed` (also when `CreatesUnexplainedError` ends the look)."""
    if floor is None and sent is None:
        raise InvariantError("cannot reconcile a lost create: amoCRM ignores order[id]")
    window = confirm_window_s(settle_s) if window_s is None else window_s
    own_user = own_user_id(client)
    found: dict[str, WriteResult] = {}
    fresh: list[dict[str, Any]] = []
    pauses = list(_pauses(settle_s, window))
    for look, pause in enumerate(pauses, 1):
        pending = [i for i in batch if i.request_id not in found]
        if not pending:
            break
        if pause:  # ends at once, AmoStoppedError, when the process is asked to stop
            wait(client.session.clock, client.session.stopping, pause)
        try:
            candidates = _candidates(client, floor, sent)
        except EmptyAnswerError:
            if look == len(pauses):
                raise  # the last look decides a resend: never on a 204
            log.warning("amo_create_look_skipped", look=look, reason="empty_answer")
            continue  # a later look asks again
        fresh = [c for c in candidates if int(c["id"]) not in claimed]
        taken = {r.id for r in found.values()}
        pairs = pair_created(
            [i.payload for i in pending],
            [c for c in fresh if int(c["id"]) not in taken],
            own_user=own_user,
        )
        for index, contact in pairs.items():
            item = pending[index]
            found[item.request_id] = to_result(item.request_id, contact, reconciled=True)
    claimed.update(r.id for r in found.values())
    missing = len(batch) - len(found)
    if missing:
        log.warning("amo_create_not_seen", missing=missing, window_s=window)
        _check_explained(fresh, found, own_user, missing)
    return found


def _check_explained(
    fresh: list[dict[str, Any]], found: dict[str, WriteResult], own_user: int | None, missing: int
) -> None:
    """`CreatesUnexplainedError` when the last look (`fresh`: not claimed) shows a contact
    that no create was matched to and that our user may have made: a create of ours edited
    since looks just so, and resending it would make a duplicate."""
    taken = {r.id for r in found.values()}
    unexplained = sorted(
        int(c["id"])
        for c in fresh
        if int(c["id"]) not in taken and (own_user is None or made_by(c, own_user))
    )
    if unexplained:
        log.warning("amo_create_unexplained", missing=missing, contacts=len(unexplained),
                    ids=unexplained[:10])  # fmt: skip
        raise CreatesUnexplainedError(
            f"{missing} lost creates not found, but amoCRM shows {len(unexplained)} new "
            "contacts of ours that match none of them (edited since?): not resent",
            found=found,
        )


def _pauses(settle_s: float, window_s: float) -> Iterator[float]:
    """0 (look at once), then 1, 2, 3 ... x `settle_s`, the last cut so that they add up to
    `window_s`."""
    yield 0.0
    waited, step = 0.0, 1
    while settle_s > 0 and waited < window_s:
        pause = min(step * settle_s, window_s - waited)
        yield pause
        waited += pause
        step += 1


def _candidates(client: AmoClient, floor: int | None, sent: Sent | None) -> list[dict[str, Any]]:
    """The contacts a create of this call may have become: above the floor or, without one,
    made around the send (a confirmation window after the last send at most)."""
    if floor is not None:
        return _created_since(client, floor)
    assert sent is not None  # find_created checked
    return created_between(client, sent, confirm_window_s(client.reconcile_settle_s))


def _created_since(client: AmoClient, floor: int) -> list[dict[str, Any]]:
    """The contacts above `floor`, read by id desc down to it. Above a floor > 0 the list cannot
    be empty before the floor is reached (the floor contact, or newer ones, exist), so a page
    that lists nothing there is a spurious 204: asked again (`Reasker`), then `EmptyAnswerError`
    (all contacts deleted looks the same: a person withdraws the creates). With floor 0 (the
    account was empty) page 1's 204 cannot be told from "nothing made": not believed either."""
    newer: list[dict[str, Any]] = []
    seen: set[int] = set()
    last_id: int | None = None
    asking = Reasker(client, client.get)
    params = {"order": {"id": "desc"}}
    pages = iter_pages(asking.fetch, CONTACTS, "contacts", params, limit=client.config.page_size)
    last: Page | None = None
    for count, page in enumerate(pages, 1):
        last = page
        for contact in page.items:
            contact_id = int(contact["id"])
            if contact_id in seen:
                continue  # pages shifted under a concurrent create: already looked at
            if last_id is not None and contact_id > last_id:
                raise InvariantError("cannot reconcile a lost create: amoCRM ignores order[id]")
            seen.add(contact_id)
            last_id = contact_id
            if contact_id <= floor:
                return newer
            newer.append(contact)
        if count >= MAX_SCAN_PAGES:
            raise InvariantError("cannot reconcile a lost create: too many new contacts to scan")
    asking.check_end(last, believe_end=floor == 0)
    return newer


def find_updated(
    client: AmoClient, batch: list[Item], planned_at: Mapping[int, int] | None = None
) -> dict[str, WriteResult]:
    """Results for the entities of `batch` whose PATCH answer was lost: those whose fields read
    back as sent, and those `superseded`. Lists lag writes, so a contact the list shows at the
    version its PATCH was planned on (`planned_at`: contact id → `updated_at`) or without the
    values is looked at again: read by id (which does not lag) when at most `BY_ID_MAX` are
    left, else listed again after 1, 2, 3 and 4 x `settle_s` (as a lost create is looked for),
    and one still unchanged `CONFIRM_SETTLES` x `settle_s` after is taken as not applied (a
    500 before the PATCH applied read 40 contacts one request each, audit s08). One that
    differs from what was sent but is newer than that version was edited since, perhaps after
    ours applied: resending would overwrite that edit (a CRM user's), so it is `superseded` and
    the caller plans it again against the new version. The rest are resent."""
    planned = planned_at or {}
    remote = client.fetch_contacts_by_ids(int(i.payload["id"]) for i in batch)
    unsure = [i for i in batch if not _shows(i, remote.get(int(i.payload["id"])), planned)]
    for look in range(1, LAG_LOOKS + 1):
        if len(unsure) <= BY_ID_MAX:
            break
        wait(client.session.clock, client.session.stopping, look * client.reconcile_settle_s)
        again = client.fetch_contacts_by_ids(int(i.payload["id"]) for i in unsure)
        remote.update(again)
        unsure = [i for i in unsure if not _shows(i, again.get(int(i.payload["id"])), planned)]
    if len(unsure) <= BY_ID_MAX:
        for item in unsure:  # the list may lag our write: by id it does not
            contact_id = int(item.payload["id"])
            read = client.fetch_contact(contact_id)
            if read is None:
                remote.pop(contact_id, None)
            else:
                remote[contact_id] = read
    found: dict[str, WriteResult] = {}
    for item in batch:
        contact_id = int(item.payload["id"])
        contact = remote.get(contact_id)
        if contact is None:
            continue  # not found: resent, and amoCRM's answer says so
        if carries(item.payload, contact, ordered=True):
            found[item.request_id] = to_result(item.request_id, contact, reconciled=True)
        elif _newer(contact, planned, contact_id):
            result = to_result(item.request_id, contact, reconciled=True)
            found[item.request_id] = replace(result, superseded=True)
    return found


def _shows(item: Item, contact: Mapping[str, Any] | None, planned: Mapping[int, int]) -> bool:
    """Whether a read shows what became of the PATCH: the values sent, or a newer version."""
    contact_id = int(item.payload["id"])
    return contact is not None and (
        carries(item.payload, contact, ordered=True) or _newer(contact, planned, contact_id)
    )


def _newer(contact: Mapping[str, Any], planned: Mapping[int, int], contact_id: int) -> bool:
    """Whether amoCRM's version is newer than the one the PATCH was planned on (unknown: no)."""
    if contact_id not in planned:
        return False
    try:
        return as_int(contact.get("updated_at")) > planned[contact_id]
    except ValueError:
        return False


def find_linked(client: AmoClient, batch: list[Item]) -> dict[str, WriteResult]:
    """Results for the chat links of `batch` that already exist."""
    contact_ids = sorted({int(i.payload["contact_id"]) for i in batch})
    links = [link for page in client.iter_chats(contact_ids=contact_ids) for link in page.items]
    found: dict[str, WriteResult] = {}
    for item in batch:
        for link in links:
            same_contact = int(link.get("contact_id", 0)) == int(item.payload["contact_id"])
            if same_contact and str(link.get("chat_id")) == str(item.payload["chat_id"]):
                found[item.request_id] = to_result(item.request_id, link, reconciled=True)
                break
    return found
