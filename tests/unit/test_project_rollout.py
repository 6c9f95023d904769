"""What ``eddy plan`` and ``eddy apply`` compare and record, and how a worker follows it.

Pure parts (the manifest and its changes) and the applied record on disk; the rollout
against a real broker and Redis, with running workers, is in
``tests/integration/test_project_apply.py``.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from eddy.services.config.settings import Settings
from eddy.services.project.applied import AppliedStore
from eddy.services.project.layout import FEATURES_FILE, MODELS_FILE, PROJECT_FILE
from eddy.services.project.loading import load_project
from eddy.services.project.manifest import Manifest, changes, manifest_of
from eddy.services.project.rollout import DeploymentFollower, NotApplied, check_applied
from eddy.streams.messages import schema_files
from eddy.streams.messages.raw_schema import RawSchema
from tests.projects import edit

CONCURRENT_APPLIES = 8
FOLLOW_EVERY_S = 0.05
FOLLOW_DEADLINE_S = 10.0


def manifest(folder: Path) -> Manifest:
    return manifest_of(load_project(folder))


def test_a_first_deployment_builds_the_feature_set_and_an_unchanged_project_changes_nothing(
    project_dir: Path,
) -> None:
    first = manifest(project_dir)
    found = [str(c) for c in changes(None, first)]
    assert found[0].startswith("first deployment: project ")
    assert found[1] == f"feature set: {first.feature_set}: built from the retained events"
    assert changes(first, manifest(project_dir)) == []


def test_a_changed_window_adds_and_removes_features_and_needs_a_rebuild(project_dir: Path) -> None:
    before = manifest(project_dir)
    edit(project_dir / FEATURES_FILE, "tumbling(DAY)", "tumbling(2 * DAY)")
    after = manifest(project_dir)
    found = [str(c) for c in changes(before, after)]
    added = [c for c in found if c.startswith("feature added: ")]
    removed = [c for c in found if c.startswith("feature removed: ")]
    assert added == ["feature added: country_distinct_2d"]
    assert removed == ["feature removed: country_distinct_1d"]
    assert (
        f"feature set: {before.feature_set} -> {after.feature_set}: "
        "the online store is rebuilt from the retained events"
    ) in found
    assert "file changed: features.py" in found


def test_a_hyperparameter_no_summary_shows_is_still_a_change(project_dir: Path) -> None:
    before = manifest(project_dir)
    models = project_dir / MODELS_FILE
    models.write_text(models.read_text() + "\n# tuned: a comment is a change of the code too\n")
    after = manifest(project_dir)
    assert after.feature_set == before.feature_set
    assert [str(c) for c in changes(before, after)] == ["file changed: models.py"]
    assert after.digest != before.digest


def test_fields_and_settings_changes_are_named(project_dir: Path) -> None:
    before = manifest(project_dir)
    with (project_dir / PROJECT_FILE).open("a") as toml:
        toml.write('\n[fields.site]\ntype = "str"\ncategories = ["north", "south"]\n')
    edit(project_dir / PROJECT_FILE, "[settings]", "[settings]\nretrain_window = 1234")
    found = [str(c) for c in changes(before, manifest(project_dir))]
    assert "field added: site: str, required, one of north, south" in found
    assert "setting retrain_window: (default) -> 1234" in found
    assert "file changed: eddy.toml" in found


def test_a_manifest_survives_its_record(project_dir: Path, tmp_path: Path) -> None:
    store = AppliedStore(tmp_path / "data")
    assert store.current() is None
    first = manifest(project_dir)
    applied = store.record(first, at=1.0, by="test", rebuilt={"new": 3})
    assert applied.revision == 1
    assert store.current() == applied
    assert store.current().manifest.digest == first.digest  # type: ignore[union-attr]


def test_concurrent_applies_get_consecutive_revisions_and_a_complete_history(
    project_dir: Path, tmp_path: Path
) -> None:
    store = AppliedStore(tmp_path / "data")
    first = manifest(project_dir)
    threads = [
        threading.Thread(
            target=store.record, args=(first,), kwargs={"at": i, "by": f"t{i}", "rebuilt": {}}
        )
        for i in range(CONCURRENT_APPLIES)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    revisions = [a.revision for a in store.history()]
    assert revisions == list(range(1, CONCURRENT_APPLIES + 1))
    assert store.current().revision == CONCURRENT_APPLIES  # type: ignore[union-attr]


def test_a_worker_runs_only_the_applied_files(project_dir: Path, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    project = load_project(project_dir)
    check_applied(settings, project)  # nothing applied yet: any project runs
    AppliedStore(settings.data_dir).record(manifest_of(project), at=1.0, by="test", rebuilt={})
    check_applied(settings, project)
    edit(project_dir / FEATURES_FILE, "tumbling(DAY)", "tumbling(2 * DAY)")
    with pytest.raises(NotApplied, match="is not what is applied"):
        check_applied(settings, load_project(project_dir))


def test_a_follower_stops_its_worker_once_another_revision_is_applied(
    project_dir: Path, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", deployment_check_s=FOLLOW_EVERY_S)
    store = AppliedStore(settings.data_dir)
    running = manifest(project_dir)
    store.record(running, at=1.0, by="test", rebuilt={})
    stopped = threading.Event()
    follower = DeploymentFollower(settings, running.digest, stop=stopped.set)
    follower.start()
    try:
        store.record(running, at=2.0, by="the same files again", rebuilt={})
        assert not stopped.wait(FOLLOW_EVERY_S * 10), "the same project re-applied restarts nothing"
        edit(project_dir / FEATURES_FILE, "tumbling(DAY)", "tumbling(2 * DAY)")
        store.record(manifest(project_dir), at=3.0, by="test", rebuilt={})
        assert stopped.wait(FOLLOW_DEADLINE_S)
        assert follower.revision == 3
    finally:
        follower.close()


def test_applied_contracts_declare_the_projects_raw_fields() -> None:
    raw = RawSchema.from_table(
        {
            "temperature": {"type": "float", "min": -40, "max": 60},
            "site": {"type": "str", "required": False, "categories": ["n"]},
        }
    )
    import json

    events = json.loads(schema_files.rendered(raw)["events.schema.json"])["properties"]["features"]
    assert events["additionalProperties"] is False
    assert events["required"] == ["temperature"]
    assert events["properties"]["temperature"] == {
        "type": "number",
        "minimum": -40.0,
        "maximum": 60.0,
    }
    assert events["properties"]["site"] == {
        "anyOf": [{"type": "string", "enum": ["n"]}, {"type": "null"}]
    }
    requests = json.loads(schema_files.rendered(raw)["prediction-requests.schema.json"])
    assert requests["properties"]["features"]["required"] == []


def test_cli_plan_shows_what_apply_would_change(
    project_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from eddy.services.cli.main import app

    monkeypatch.setenv("EDDY_DATA_DIR", str(tmp_path / "data"))
    first = CliRunner().invoke(app, ["plan", str(project_dir)])
    assert first.exit_code == 0, first.output
    assert "changes against the deployment (nothing applied yet): 2" in first.stdout
    assert first.stdout.rstrip().endswith("next: eddy apply")
    AppliedStore(tmp_path / "data").record(manifest(project_dir), at=1.0, by="test", rebuilt={})
    again = CliRunner().invoke(app, ["plan", str(project_dir)])
    assert again.exit_code == 0, again.output
    assert again.stdout.rstrip().endswith("no changes against the deployment (revision 1)")


def test_a_new_operation_is_served_from_the_stored_states_without_a_rebuild(
    project_dir: Path,
) -> None:
    before = manifest(project_dir)
    edit(project_dir / FEATURES_FILE, '("distinct",)', '("distinct", "count")')
    after = manifest(project_dir)
    assert after.states == before.states
    found = [str(c) for c in changes(before, after)]
    assert "feature added: country_count_1d" in found
    assert (
        f"feature set: {before.feature_set} -> {after.feature_set}: "
        "served from the stored states as they are (no rebuild)"
    ) in found


def test_the_first_distinct_of_a_field_rebuilds_the_store(project_dir: Path) -> None:
    before = manifest(project_dir)
    edit(project_dir / FEATURES_FILE, '("count", "sum", "mean"), sliding', '("distinct",), sliding')
    after = manifest(project_dir)
    assert after.states != before.states  # amount's buckets now keep its distinct values
    assert (
        f"feature set: {before.feature_set} -> {after.feature_set}: "
        "the online store is rebuilt from the retained events"
    ) in [str(c) for c in changes(before, after)]


def test_the_skew_check_leaves_out_answers_of_the_definitions_an_apply_replaced(
    project_dir: Path, tmp_path: Path
) -> None:
    from collections import Counter

    from eddy.services.quality.skew_check import _under_these_definitions
    from eddy.streams.features.skew import Served

    settings = Settings(data_dir=tmp_path / "data")
    current = load_project(project_dir)
    AppliedStore(settings.data_dir).record(manifest_of(current), at=100.0, by="t", rebuilt={})

    def served(request_id: str, at: float, feature_set: str | None) -> Served:
        return Served(request_id, "u1", at, {}, {}, feature_set=feature_set)

    sample = [
        served("old-before", 50.0, "replaced"),
        served("old-after", 150.0, "replaced"),  # other definitions since the apply: skew
        served("current", 50.0, current.fingerprint),
        served("unstamped", 50.0, None),
    ]
    skipped: Counter[str] = Counter()
    kept = _under_these_definitions(settings, current.features, sample, skipped)
    assert [s.request_id for s in kept] == ["old-after", "current", "unstamped"]
    assert skipped == {"before_the_applied_revision": 1}
