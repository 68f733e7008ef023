"""The deployment guard's core (no Prefect): record a service's release, gate a deployment on its health
checks, put a service back to its last-good release.

* :mod:`.record` — ``ServiceRecord``: a container's full configuration from the Docker engine's inspect;
* :mod:`.recreate` — refuse a missing image before anything changes; stop, rename aside, create, start,
  and put the old container back on failure, by container id (volumes are never removed);
* :mod:`.gate` — pure: N consecutive passes of every check within a timeout; the round-by-round runner;
* :mod:`.releases` — last-good releases and pre-deploy guards under ``deploy/`` in the repository (records
  age-encrypted to the backup recipients); the images the Docker cleanup must keep;
* :mod:`.pins` — a tag per service on its last-good image, so ``compose up --build`` never leaves it dangling;
* :mod:`.rollback_report` — a rollback as an incident in CharHub's report template.
"""
