"""Docker host cleanup against the real engine: what goes, and what must stay (volumes, used images, labels).

Every resource made here carries a unique scope label and the cleanup is scoped to it, so the other
tests' containers and images on the shared engine are never candidates.
"""

from __future__ import annotations

import io
import tarfile
import uuid
from datetime import UTC, datetime, timedelta

import docker
import pytest

from charhub_ops.cleanup.docker_host import (
    COMPOSE_LABEL,
    KEEP_LABEL,
    Container,
    DiskUsage,
    DockerInventory,
    Image,
    execute_docker,
    plan_docker,
    scan_docker,
)
from charhub_ops.errors import DockerError
from tests.harness.docker_pg import ensure_busybox_image, require_docker


@pytest.fixture
def engine():
    client = require_docker()
    yield client


def _import(client, tag: str, label: str, marker: str) -> str:
    """A one-file image (imported, like the harness's busybox) carrying the scope label."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = marker.encode()
        info = tarfile.TarInfo("marker")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    repo, _, version = tag.partition(":")
    client.api.import_image_from_data(buf.getvalue(), repository=repo, tag=version, changes=[f"LABEL {label}"])
    return client.images.get(tag).id


@pytest.fixture
def scene(engine):
    """A scoped set: an old stopped container (goes), one with the keep label (stays), a named volume mounted
    by the one that goes (stays), a dangling image (goes), a dangling image used by a stopped container (stays)."""
    scope = f"charhub-ops-test={uuid.uuid4().hex[:10]}"
    key, value = scope.split("=")
    busybox = ensure_busybox_image(engine)
    volume = engine.volumes.create(f"cleanup-{value}", labels={key: value})
    made = []

    def run(name: str, image: str, labels: dict, start: bool = True, **kw):
        c = engine.containers.create(image, ["true"], name=f"{name}-{value}", labels={key: value, **labels}, **kw)
        made.append(c)
        if start:
            c.start()
            c.wait()
        return c

    goes = run("goes", busybox, {}, volumes={volume.name: {"bind": "/data", "mode": "rw"}})
    kept = run("kept", busybox, {KEEP_LABEL: "true"})
    tag = f"charhub-cleanup-test:{value}"
    used = _import(engine, tag, scope, "used")
    user = run("user", tag, {KEEP_LABEL: ""}, start=False)  # keeps its image alive; the empty label value keeps too
    dangling = _import(engine, tag, scope, "dangling-1")  # re-tagging leaves `used` dangling too
    _import(engine, tag, scope, "dangling-2")  # and now dangling-1 is dangling
    yield {"scope": scope, "goes": goes, "kept": kept, "user": user, "volume": volume, "used": used,
           "dangling": dangling, "tag": tag}
    for c in made:
        try:
            c.remove(force=True)
        except docker.errors.NotFound:
            pass
    for image in (tag, used, dangling):
        try:
            engine.images.remove(image, force=True)
        except docker.errors.ImageNotFound:
            pass
    volume.remove(force=True)


def test_prune_leaves_volumes_used_images_and_labelled_containers(engine, scene):
    now = datetime.now(UTC) + timedelta(hours=2)  # everything made above is "2 hours old"
    plan = plan_docker(scan_docker(engine), now, timedelta(hours=1), scope_label=scene["scope"])
    assert [c.id for c in plan.containers] == [scene["goes"].id]
    assert [i.id for i in plan.images] == [scene["dangling"]]
    assert any(scene["used"][:19] in reason and "used by container" in reason for reason in plan.kept)
    assert plan.usage_before.total > 0
    result = execute_docker(plan, engine)
    assert not result.warnings, result.warnings
    assert result.removed_containers == [scene["goes"].name] and result.removed_images == [scene["dangling"]]
    with pytest.raises(docker.errors.NotFound):
        engine.containers.get(scene["goes"].id)
    engine.volumes.get(scene["volume"].name)  # the named volume it mounted is still there
    engine.containers.get(scene["kept"].id)
    engine.containers.get(scene["user"].id)
    engine.images.get(scene["used"])  # dangling, but a stopped container uses it
    assert result.usage_after is not None


def test_young_containers_stay(engine, scene):
    plan = plan_docker(scan_docker(engine), datetime.now(UTC), timedelta(hours=1), scope_label=scene["scope"])
    assert plan.containers == []
    assert any("stopped less than" in reason for reason in plan.kept)


def test_an_unreachable_engine_is_one_error_naming_docker_host(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    with pytest.raises(DockerError) as caught:
        scan_docker()
    assert str(caught.value) == ("docker: cannot reach the Docker engine (DOCKER_HOST=unix:///nonexistent.sock): "
                                 "No such file or directory")
    assert not caught.value.transient  # as charhub_ops.docker_exec decides: a missing socket does not come back


def _c(name: str, state: str = "exited", hours_ago: float = 48, image: str = "sha256:a", **labels) -> Container:
    return Container(id=name, name=name, state=state, image_id=image, labels=labels,
                     finished=None if state == "running" else NOW - timedelta(hours=hours_ago))


NOW = datetime(2026, 11, 29, 4, 30, tzinfo=UTC)


@pytest.mark.parametrize(("container", "removed"), [
    (_c("old"), True),
    (_c("young", hours_ago=2), False),
    (_c("running", state="running"), False),
    (_c("created", state="created"), True),
    (_c("kept", **{KEEP_LABEL: "true"}), False),
    (_c("kept-empty", **{KEEP_LABEL: ""}), False),
    (_c("not-kept", **{KEEP_LABEL: "false"}), True),
    (_c("charhub-postgres-1", **{COMPOSE_LABEL: "charhub"}), False),
    # parked by a rollback: compose labels of the release it ran, but compose no longer knows it
    (_c("charhub-backend-1-replaced-20261127t010000z", **{COMPOSE_LABEL: "charhub"}), True),
    (_c("charhub-backend-1-replaced-20261129t030000z", hours_ago=1.5, **{COMPOSE_LABEL: "charhub"}), False),
    (_c("charhub-backend-1-replaced-by-hand", **{COMPOSE_LABEL: "charhub"}), False),
    (_c("charhub-backend-1-replaced-20261127t010000z-kept", **{COMPOSE_LABEL: "charhub", KEEP_LABEL: "1"}), False),
])
def test_which_containers_go(container, removed):
    inventory = DockerInventory(containers=[container], dangling=[], usage=DiskUsage())
    plan = plan_docker(inventory, NOW, timedelta(hours=24))
    assert ([c.name for c in plan.containers] == [container.name]) is removed
    assert removed or plan.kept or container.state == "running"


def test_a_dangling_image_used_by_any_container_stays():
    inventory = DockerInventory(containers=[_c("up", state="running", image="sha256:u"), _c("down", image="sha256:d")],
                                dangling=[Image(id="sha256:u", size=1), Image(id="sha256:d", size=2),
                                          Image(id="sha256:free", size=3)], usage=DiskUsage())
    plan = plan_docker(inventory, NOW, timedelta(hours=24))
    assert [i.id for i in plan.images] == ["sha256:free"]  # "down" goes in this run, but its image was in use


def test_an_image_a_deploy_record_names_stays_even_dangling():
    """The last-good image of a service (from the deploy records) is never a candidate, pinned or not."""
    inventory = DockerInventory(containers=[], usage=DiskUsage(),
                                dangling=[Image(id="sha256:good", size=1), Image(id="sha256:old", size=2)])
    plan = plan_docker(inventory, NOW, timedelta(hours=24),
                       protected={"sha256:good": "last-good of charhub-backend-1 (charhub-backend:latest)"})
    assert [i.id for i in plan.images] == ["sha256:old"]
    assert plan.kept == ["image sha256:good: last-good of charhub-backend-1 (charhub-backend:latest)"]
