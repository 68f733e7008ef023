"""Cleanup policies: the pure batch policy (table tests) and the checks against a CharHub-shaped catalog."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest
import yaml

from charhub_ops.cleanup.batches import BatchSizer, Budget, choose_sweep, pause_after, stop_reason
from charhub_ops.cleanup.policy import PolicyFile, RowPolicy, TablePlan, load_policy_file
from charhub_ops.cleanup.run import plan_policies
from charhub_ops.cleanup.sweep import blocks_statement, conditions, index_statement
from charhub_ops.errors import PolicyError
from tests.harness.charhub_schema import create_charhub_schema

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "cleanup-policy.example.yaml"


@pytest.mark.parametrize(("start", "floor", "timeouts", "sizes"), [
    (5000, 100, 1, [3750]),
    (5000, 100, 3, [3750, 2813, 2110]),
    (400, 100, 6, [300, 225, 169, 127, 100, 100]),
    (100, 100, 2, [100, 100]),
    (3, 1, 3, [2, 1, 1]),  # a quarter of 3 is 0: still shrinks by one
])
def test_batch_shrinks_by_a_quarter_down_to_the_floor(start, floor, timeouts, sizes):
    sizer = BatchSizer(start, floor=floor)
    seen = []
    for _ in range(timeouts):
        sizer.shrink()
        seen.append(sizer.size)
    assert seen == sizes


def test_the_floor_gives_up_after_repeated_timeouts():
    sizer = BatchSizer(100, floor=100, max_failures_at_floor=3)
    assert [sizer.shrink() for _ in range(3)] == [True, True, False]


FAST, OK, SLOW = 0.01, 0.1, 0.3  # batch durations against the 0.1 s target: under half, within, over twice


@pytest.mark.parametrize(("start", "ceiling", "batches", "sizes"), [
    (5000, 50_000, [(FAST, True)] * 6, [7500, 11250, 16875, 25312, 37968, 50000]),  # half again, up to the ceiling
    (5000, 50_000, [(FAST, False)] * 2, [5000, 5000]),  # a short batch says nothing about the size
    (5000, 50_000, [(OK, True)] * 2, [5000, 5000]),  # within the target: stays
    (5000, 50_000, [(SLOW, True), (SLOW, False)], [3750, 2813]),  # over twice the target: a quarter off
    (5000, 50_000, [(FAST, True), (SLOW, True), (FAST, True)], [7500, 5625, 8437]),
    (5000, None, [(FAST, True)] * 2, [5000, 5000]),  # no ceiling: never grows
    (5000, 1000, [(FAST, True)], [5000]),  # a ceiling under the start size is the start size
    (150, 50_000, [(SLOW, True)] * 3, [113, 100, 100]),  # slow batches stop at the floor, and never fail
])
def test_batch_grows_while_fast_and_shrinks_when_slow(start, ceiling, batches, sizes):
    sizer = BatchSizer(start, floor=100, ceiling=ceiling, target_seconds=0.1)
    seen = []
    for seconds, full in batches:
        sizer.record(seconds, full)
        seen.append(sizer.size)
    assert seen == sizes
    assert sizer.failures_at_floor == 0


def test_after_a_timeout_the_batch_never_grows_back_past_the_shrunk_size():
    sizer = BatchSizer(1000, floor=100, ceiling=10_000)
    sizer.record(FAST, True)
    assert sizer.size == 1500
    assert sizer.shrink() and sizer.size == 1125
    sizer.record(FAST, True)
    assert (sizer.size, sizer.ceiling) == (1125, 1125)
    sizer.record(SLOW, True)
    sizer.record(FAST, True)
    assert sizer.size == 1125  # 844 after the slow batch, then back up to the ceiling the timeout left


@pytest.mark.parametrize(("seconds", "minimum", "ratio", "pause"), [
    (0.2, 0.01, 0.25, 0.05),  # proportional to the batch
    (0.02, 0.01, 0.25, 0.01),  # never under the minimum
    (0.2, 0.0, 0.0, 0.0),  # no pause at all
    (1.0, 0.05, 1.0, 1.0),  # ratio 1: the cleaner works half the time
])
def test_pause_is_proportional_to_the_batch(seconds, minimum, ratio, pause):
    assert pause_after(seconds, minimum, ratio) == pytest.approx(pause)


@pytest.mark.parametrize(("budget", "deleted", "elapsed", "finished", "reason"), [
    (Budget(), 10, 1.0, True, "done"),
    (Budget(), 10, 1.0, False, None),  # a short batch (rows skipped as locked) is not the end
    (Budget(max_rows=10), 10, 1.0, True, "done"),  # both: done wins (no cursor kept)
    (Budget(max_rows=10), 10, 1.0, False, "max_rows"),
    (Budget(max_seconds=2), 5, 2.5, False, "max_seconds"),
    (Budget(max_rows=100, max_seconds=60), 50, 1.0, False, None),
])
def test_stop_reason(budget, deleted, elapsed, finished, reason):
    assert stop_reason(budget, deleted, elapsed, finished) == reason


@pytest.mark.parametrize(("requested", "partitioned", "indexed", "matched", "estimated", "sweep"), [
    ("auto", False, True, 1_000, 1_000_000, "index"),  # 0.1 % of the table: read only those rows
    ("auto", False, True, 100_000, 1_000_000, "blocks"),  # 10 %: one pass over the heap is cheaper
    ("auto", False, True, 900_000, 1_000_000, "blocks"),
    ("auto", False, True, 10, 0, "blocks"),  # never analyzed: no estimate to trust
    ("auto", False, False, 1, 1_000_000, "blocks"),  # no index: an index walk would scan per batch
    ("index", False, False, 1, 1_000_000, "blocks"),  # ... even when asked for
    ("auto", True, True, 900_000, 1_000_000, "index"),  # partitioned: block numbers are per partition
    ("blocks", True, True, 1, 1_000_000, "index"),
    ("index", False, True, 900_000, 1_000_000, "index"),  # an explicit choice wins when both are possible
    ("blocks", False, True, 1, 1_000_000, "blocks"),
])
def test_choose_sweep(requested, partitioned, indexed, matched, estimated, sweep):
    assert choose_sweep(requested, partitioned=partitioned, indexed=indexed, matched=matched,
                        estimated_rows=estimated, share=0.1) == sweep


@pytest.fixture
def charhub_db(database):
    create_charhub_schema(database)
    with psycopg.connect(database, autocommit=True) as conn:
        yield conn


def _file(*policies, **extra) -> PolicyFile:
    return PolicyFile.model_validate({"policies": list(policies), **extra})


def test_the_example_policy_file_is_valid_against_charhub(charhub_db):
    plans = plan_policies(charhub_db, load_policy_file(EXAMPLE))
    assert [p.policy.table for p in plans] == ["UsageLog", "LLMUsageLog", "CorrectionJobLog", "BatchGenerationLog",
                                               "MessageTranslation", "ContentTranslation", "CuratedImage"]
    by_table = {p.policy.table: p for p in plans}
    assert by_table["UsageLog"].index_warning is None
    warning = by_table["CorrectionJobLog"].index_warning
    assert 'CREATE INDEX CONCURRENTLY ON "CorrectionJobLog" ("startedAt")' in warning
    assert all(p.key == ["ctid"] and not p.cascades for p in plans)


BAD = [
    ({"table": "NoSuchLog", "timestamp_column": "createdAt", "older_than": "30d"}, "NoSuchLog: no such table"),
    ({"table": "UsageLog", "timestamp_column": "createdAt", "older_than": "30d"}, "unknown column 'createdAt'"),
    ({"table": "UsageLog", "timestamp_column": "tokens", "older_than": "30d"}, "is integer, not a timestamp"),
    ({"table": "CreditTransaction", "timestamp_column": "timestamp", "older_than": "1y"}, "protected"),
    ({"table": "Conversation", "timestamp_column": "createdAt", "older_than": "1y"},
     '"Message"(conversationId) ON DELETE CASCADE'),
    ({"table": "UsageLog", "timestamp_column": "timestamp", "older_than": "30d",
      "where": {"processed = true OR 1": True}}, "unknown column 'processed = true OR 1'"),
    ({"table": "ContentTranslation", "timestamp_column": "updatedAt", "older_than": "30d",
      "where": {"status": "FAILED' OR '1'='1"}}, "looks like SQL"),
    ({"table": "ContentTranslation", "timestamp_column": "updatedAt", "older_than": "30d",
      "where": {"status": "x; DROP TABLE \"User\""}}, "looks like SQL"),
    ({"table": "UsageLog", "timestamp_column": "timestamp", "older_than": "30d", "where": {"processed": "yes"}},
     "does not fit the column's type (boolean)"),
]


@pytest.mark.parametrize(("policy", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_policies_are_refused_naming_the_policy(charhub_db, policy, message):
    good = {"table": "LLMUsageLog", "timestamp_column": "createdAt", "older_than": "90d"}
    with pytest.raises(PolicyError) as caught:
        plan_policies(charhub_db, _file(good, policy))
    assert message in str(caught.value)
    assert f"policy {policy['table']}" in str(caught.value)


def test_credit_transaction_is_protected_without_the_key(charhub_db):
    with pytest.raises(PolicyError, match="policy CreditTransaction: the table is protected"):
        plan_policies(charhub_db, _file({"table": "CreditTransaction", "timestamp_column": "timestamp",
                                         "older_than": "1y"}, protected_tables=[]))


def test_protected_tables_from_the_file(charhub_db):
    with pytest.raises(PolicyError, match="policy LLMUsageLog: the table is protected"):
        plan_policies(charhub_db, _file({"table": "LLMUsageLog", "timestamp_column": "createdAt",
                                         "older_than": "1y"}, protected_tables=["LLMUsageLog"]))


def test_an_allowed_cascade_is_shown_in_the_plan(charhub_db):
    (plan,) = plan_policies(charhub_db, _file({"table": "Conversation", "timestamp_column": "createdAt",
                                               "older_than": "1y", "cascade": "allowed"}))
    assert plan.cascades == ['Conversation → "Message"(conversationId) ON DELETE CASCADE',
                             'Conversation → "Message"(conversationId) ON DELETE CASCADE → "MessageTranslation"'
                             '(messageId) ON DELETE CASCADE']


@pytest.mark.parametrize(("content", "message"), [
    ({"policies": [{"table": "UsageLog", "timestamp_column": "timestamp", "older_than": "90 days"}]},
     "policy #1 (UsageLog): older_than: cannot parse duration"),
    ({"policies": [{"table": "UsageLog", "timestamp_column": "timestamp", "older_than": "90d",
                    "where": "processed = true"}]}, "policy #1 (UsageLog): where"),
    ({"policies": [{"table": "UsageLog", "timestamp_column": "timestamp", "older_than": "90d",
                    "cascade": "yes"}]}, "cascade: the only value is 'allowed'"),
    ({"policies": []}, "policies"),
])
def test_the_file_shape_is_checked(tmp_path, content, message):
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(PolicyError) as caught:
        load_policy_file(path)
    assert message in str(caught.value)


@pytest.mark.parametrize(("module", "names"), [
    ("policy", {"ALWAYS_PROTECTED", "is_not_null", "is_protected", "RowPolicy", "PolicyFile", "TablePlan",
                "load_policy_file", "check_policy", "index_hint"}),
    ("schema", {"Reach", "TableShape", "table_shape"}),
    ("batches", {"BatchSizer", "Budget", "choose_sweep", "pause_after", "stop_reason"}),
    ("rows", {"RowOptions", "PolicyResult", "cursor_key", "count_matching", "delete_expired", "vacuum_analyze",
              "read_cursor", "save_cursor", "ensure_cursors"}),
    ("run", {"plan_policies", "run_policy", "run_policies", "rows_to_json", "plan_to_json"}),
    ("orphans", {"MediaReference", "OrphanOptions", "OrphanPlan", "OrphanResult", "parse_references",
                 "References", "parse_owners", "plan_orphans", "execute_orphans", "QUARANTINE", "RECHECK_BATCH",
                 "stale_uploads", "abort_stale_uploads"}),
    ("media_refs", {"MediaReference", "parse_references", "references_in", "referenced_keys", "KEY_MAX"}),
    ("docker_host", {"Container", "Image", "DockerInventory", "DockerPlan", "DockerResult", "DiskUsage",
                     "scan_docker", "plan_docker", "execute_docker", "disk_usage", "KEEP_LABEL", "COMPOSE_LABEL"}),
])
def test_public_api_is_pinned(module, names):
    import importlib

    mod = importlib.import_module(f"charhub_ops.cleanup.{module}")
    assert set(mod.__all__) == names and all(hasattr(mod, n) for n in names)


# --- the whole cascade graph (issue 16, item 5) --------------------------------------------------------

def test_every_level_of_a_cascade_is_in_the_plan_with_its_path(charhub_db):
    charhub_db.execute("""CREATE TABLE "TranslationVote" ("id" TEXT PRIMARY KEY,
        "translationId" TEXT NOT NULL REFERENCES "MessageTranslation"("id") ON DELETE CASCADE);
        CREATE TABLE "VoteNote" ("id" TEXT PRIMARY KEY,
        "voteId" TEXT REFERENCES "TranslationVote"("id") ON DELETE SET NULL)""")
    (plan,) = plan_policies(charhub_db, _file({"table": "Conversation", "timestamp_column": "createdAt",
                                               "older_than": "1y", "cascade": "allowed"}))
    assert plan.cascades == [
        'Conversation → "Message"(conversationId) ON DELETE CASCADE',
        'Conversation → "Message"(conversationId) ON DELETE CASCADE → "MessageTranslation"(messageId) '
        'ON DELETE CASCADE',
        'Conversation → "Message"(conversationId) ON DELETE CASCADE → "MessageTranslation"(messageId) '
        'ON DELETE CASCADE → "TranslationVote"(translationId) ON DELETE CASCADE',
        'Conversation → "Message"(conversationId) ON DELETE CASCADE → "MessageTranslation"(messageId) '
        'ON DELETE CASCADE → "TranslationVote"(translationId) ON DELETE CASCADE → "VoteNote"(voteId) '
        'ON DELETE SET NULL']
    with pytest.raises(PolicyError, match='"VoteNote"'):  # without `cascade: allowed` the refusal names them all
        plan_policies(charhub_db, _file({"table": "Conversation", "timestamp_column": "createdAt", "older_than": "1y"}))


def test_a_self_reference_is_in_the_plan(charhub_db):
    charhub_db.execute("""ALTER TABLE "Message" ADD "parentId" TEXT REFERENCES "Message"("id") ON DELETE CASCADE""")
    (plan,) = plan_policies(charhub_db, _file({"table": "Message", "timestamp_column": "createdAt",
                                               "older_than": "30d", "cascade": "allowed"}))
    assert 'Message → "Message"(parentId) ON DELETE CASCADE (self-reference)' in plan.cascades
    assert plan.self_references == [(["parentId"], ["id"])]
    assert 'CREATE INDEX CONCURRENTLY ON "Message" ("parentId")' in plan.reference_warning
    charhub_db.execute("""CREATE INDEX ON "Message" ("parentId")""")
    (indexed,) = plan_policies(charhub_db, _file({"table": "Message", "timestamp_column": "createdAt",
                                                  "older_than": "30d", "cascade": "allowed"}))
    assert indexed.reference_warning is None


def test_a_cascade_back_into_the_table_through_another_is_refused(charhub_db):
    charhub_db.execute("""ALTER TABLE "Conversation" ADD "pinnedId" TEXT
                          REFERENCES "Message"("id") ON DELETE CASCADE""")
    expected = ('policy Message: a cascade comes back into the table through others (Message → "Conversation"'
                '(pinnedId) ON DELETE CASCADE → "Message"(conversationId) ON DELETE CASCADE (back into')
    with pytest.raises(PolicyError, match=re.escape(expected)):
        plan_policies(charhub_db, _file({"table": "Message", "timestamp_column": "createdAt", "older_than": "30d",
                                         "cascade": "allowed"}))


@pytest.mark.parametrize("via", ["UsageLog", "LLMUsageLog"], ids=["level 1", "level 2"])
def test_a_cascade_reaching_credit_transaction_is_refused_even_when_allowed(charhub_db, via):
    charhub_db.execute("""ALTER TABLE "UsageLog" ADD "llmId" TEXT REFERENCES "LLMUsageLog"("id") ON DELETE CASCADE;
        ALTER TABLE "CreditTransaction" ADD "usageLogId" TEXT REFERENCES "UsageLog"("id") ON DELETE CASCADE""")
    policy = {"table": via, "timestamp_column": "timestamp" if via == "UsageLog" else "createdAt",
              "older_than": "90d", "cascade": "allowed"}
    with pytest.raises(PolicyError, match=f"policy {via}: .*reaches the protected table CreditTransaction"):
        plan_policies(charhub_db, _file(policy, protected_tables=[]))


@pytest.mark.parametrize("name", ["Payment", "public.Payment", '"public"."Payment"', '"Payment"'])
def test_protected_names_match_with_or_without_schema(charhub_db, name):
    charhub_db.execute("""CREATE TABLE "Payment" ("id" TEXT PRIMARY KEY, "createdAt" TIMESTAMP(3) NOT NULL,
        "usageLogId" TEXT REFERENCES "UsageLog"("id") ON DELETE SET NULL)""")
    with pytest.raises(PolicyError, match="policy Payment: the table is protected"):
        plan_policies(charhub_db, _file({"table": "Payment", "timestamp_column": "createdAt", "older_than": "1y"},
                                        protected_tables=[name]))
    with pytest.raises(PolicyError, match="policy UsageLog: .*reaches the protected table Payment"):
        plan_policies(charhub_db, _file({"table": "UsageLog", "timestamp_column": "timestamp", "older_than": "1y",
                                         "cascade": "allowed"}, protected_tables=[name]))


def test_a_table_with_inheritance_children_is_refused(charhub_db):
    charhub_db.execute("""CREATE TABLE "UsageLogArchive" () INHERITS ("UsageLog")""")
    with pytest.raises(PolicyError, match='policy UsageLog: .*inheritance children \\("UsageLogArchive"\\)'):
        plan_policies(charhub_db, _file({"table": "UsageLog", "timestamp_column": "timestamp", "older_than": "90d"}))
    (child,) = plan_policies(charhub_db, _file({"table": "UsageLogArchive", "timestamp_column": "timestamp",
                                                "older_than": "90d"}))
    assert child.key == ["ctid"]  # a child without children of its own is an ordinary table


def test_a_cascade_into_a_partitioned_table_is_followed_through_its_partitions(charhub_db):
    charhub_db.execute("""CREATE TABLE "Ledger" ("id" TEXT, "usageLogId" TEXT REFERENCES "UsageLog"("id")
        ON DELETE CASCADE, PRIMARY KEY ("id")) PARTITION BY HASH ("id");
        CREATE TABLE "Ledger_0" PARTITION OF "Ledger" FOR VALUES WITH (MODULUS 2, REMAINDER 0);
        CREATE TABLE "Ledger_1" PARTITION OF "Ledger" FOR VALUES WITH (MODULUS 2, REMAINDER 1);
        CREATE TABLE "LedgerNote" ("id" TEXT PRIMARY KEY,
            "ledgerId" TEXT REFERENCES "Ledger"("id") ON DELETE CASCADE)""")
    (plan,) = plan_policies(charhub_db, _file({"table": "UsageLog", "timestamp_column": "timestamp",
                                               "older_than": "90d", "cascade": "allowed"}))
    assert plan.cascades == ['UsageLog → "Ledger"(usageLogId) ON DELETE CASCADE',
                             'UsageLog → "Ledger"(usageLogId) ON DELETE CASCADE → "LedgerNote"(ledgerId) '
                             'ON DELETE CASCADE']  # once each, not once per partition
    with pytest.raises(PolicyError, match="reaches the protected table Ledger"):
        plan_policies(charhub_db, _file({"table": "UsageLog", "timestamp_column": "timestamp", "older_than": "90d",
                                         "cascade": "allowed"}, protected_tables=["Ledger"]))


def test_a_partition_of_a_protected_table_is_protected(charhub_db):
    charhub_db.execute("""CREATE TABLE "Payment" ("id" TEXT, "createdAt" TIMESTAMP(3) NOT NULL,
        PRIMARY KEY ("id", "createdAt")) PARTITION BY RANGE ("createdAt");
        CREATE TABLE "Payment_2025" PARTITION OF "Payment" FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')""")
    with pytest.raises(PolicyError, match="policy Payment_2025: the table is protected"):
        plan_policies(charhub_db, _file({"table": "Payment_2025", "timestamp_column": "createdAt",
                                         "older_than": "1y"}, protected_tables=["public.Payment"]))


def _plan(key: list[str], self_references=()) -> TablePlan:
    policy = RowPolicy.model_validate({"table": "Job", "timestamp_column": "updatedAt", "older_than": "30d",
                                       "where": {"processed": True}})
    return TablePlan(policy=policy, key=key, cascades=[], restricts=[], self_references=list(self_references))


@pytest.mark.parametrize("key", [["ctid"], ["id"]], ids=["ctid", "primary key"])
@pytest.mark.parametrize("form", ["index", "index skip locked", "index cursor", "blocks", "blocks limited",
                                  "blocks skip locked"])
def test_every_delete_repeats_the_timestamp_and_where(key, form):
    """The DELETE itself — not only the batch's SELECT — carries both predicates, in every form (issue 16, item 6)."""
    plan = _plan(key)
    if form.startswith("index"):
        statement, _ = index_statement(plan, with_cursor=form.endswith("cursor"), skip_locked="skip" in form)
    else:
        statement, _ = blocks_statement(plan, limited="limited" in form, skip_locked="skip" in form)
    text = statement.as_string(None)
    selected_first = form != "blocks"  # the others select the batch (a CTE or a subquery) and then delete it
    for predicate in ('"updatedAt" < %(cutoff)s', '"processed" = ANY(%(w0)s)'):
        assert text.count(predicate) == (2 if selected_first else 1)


def test_a_self_reference_guard_is_in_the_count_and_every_delete():
    plan = _plan(["ctid"], [(["parentId"], ["id"])])
    where, _ = conditions(plan, with_cursor=False)
    text = where.as_string(None)
    assert 'NOT EXISTS (WITH RECURSIVE _d("_charhub_k0", "_charhub_ok")' in text
    assert '_c."parentId" = "Job"."id"' in text and '_c."parentId" = "_d"."_charhub_k0"' in text
    statement, _ = index_statement(plan, with_cursor=False, skip_locked=False)
    assert statement.as_string(None).count("NOT EXISTS") == 2  # the batch's SELECT and its DELETE
