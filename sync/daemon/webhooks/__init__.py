"""amoCRM's webhooks in the daemon (see docs/operations.md#webhooks): a hook is a hint, never data.

`hints` (pure: a hook post → contact ids with the `updated_at` they announce), `pull` (hooks →
few, rate-bounded pulls: the `Inbox` debounce, `PullSoon`, `Pace`), `watch` (are hooks arriving?
healthy / quiet / degraded, and the poll interval that follows), `daemon_hooks` (what
`webhooks.enabled` adds to one daemon process, in one place), `subscription` (the daemon's hook
as amoCRM knows it: `amosync webhooks register | status | unregister`).
"""
