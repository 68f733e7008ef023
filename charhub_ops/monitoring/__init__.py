"""The monitoring pipeline's core (no Prefect): checks, the alerting state machine, incidents, reports.

* :mod:`.config` — the YAML file (pydantic), one model per check type;
* :mod:`.checks` — http, postgres, container, log_errors, disk, backups, archive: one probe each →
  ``CheckResult`` (facts from :mod:`.pgfacts`, :mod:`.dockerfacts` and :mod:`.archive` — WAL archiving, pure
  judgement; details through :mod:`.redact`);
* :mod:`.runner` — one pass: probe → state machine → events (shared by the flow and the CLI);
* :mod:`.schedule` — pure: when each check is due (its own ``interval``);
* :mod:`.loop` — the long-running monitor: probes in-process, saves on change, heartbeat, the latest-pass view;
* :mod:`.state` — pure: streaks, down / recovered once, reminders (``now`` is an argument);
* :mod:`.windows` — pure: recurring and ad hoc maintenance windows;
* :mod:`.incident_model` — pure: one open incident per check, timeline, actions, restart budget;
* :mod:`.store` — the state-store protocol, the repository implementation and ``open_state`` (the one rule);
* :mod:`.variables` — the Prefect Variables implementation, through a client the caller passes (no Prefect here);
* :mod:`.diagnose`, :mod:`.mitigate` — the incident runbook's facts and actions; :mod:`.report` — the write-up.
"""
