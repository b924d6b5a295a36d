"""The daemon, `amosync run` (see docs/operations.md): the use case that composes pull and push.

`run` (the composition root: `run_daemon`, signals, the HTTP server started, migrations waited
for) builds the `Parts` that `leader` runs (stand by, take the leader lock, lead until it is lost
or the process stops); `schedule` holds the leader's jobs and the wrapper that keeps a failing
one from killing the scheduler, `debounce` turns notifications into few calls, `health` the
verdicts of /healthz and /livez, `token_probe` tries a refused long-lived token again before a
job, `metrics` the Prometheus registry, `server` the HTTP server of
both and of the webhook; `resync` asks the running daemon for a full resync (`amosync resync`);
`webhooks/` is what `webhooks.enabled` adds.

Nothing is imported here, so a command that needs one piece (the webhook subscription, the
resync request) loads only that piece: `from sync.daemon.run import run_daemon`.
"""
