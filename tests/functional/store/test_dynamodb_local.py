"""The result store's tests once more, on DynamoDB Local: the stricter DynamoDB.

DynamoDB Local is Amazon's own engine for development: conditional writes, transactions and their
cancellation reasons, and item-size limits behave there as in DynamoDB, where moto is lenient (its
TransactWriteItems is not isolated, for one). So every test of ``test_claims.py`` (claims,
revocation markers, batches) and every test of the result backend that talks to the results table
(``test_results.py``: never overwrite a terminal state, indexes; ``test_result_reads.py``: batch
reads; ``test_large_results.py``: large results) is collected here a second time, unchanged, with
``cloud`` overridden: for this module the process is on the LocalStack target (DynamoDB Local for
DynamoDB, LocalStack for S3). The concurrency proofs, which need two clients at once, are in
``tests/integration/test_targets.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from devtools.cloud.deploy import Deployment
from devtools.cloud.localstack import LocalStack
from infra.core import aws

# The tests, and test_claims.py's fixtures: defined here again, they see this module's ``cloud``
# (the result backend's fixtures come from this folder's conftest.py and see it too).
from tests.functional.store.test_claims import (  # noqa: F401
    clock,
    store,
    test_async_result_revoke_records_a_marker,
    test_batch_claim_failure_surfaces_when_the_record_is_processed,
    test_cli_revoke_prints_and_records,
    test_control_revoke_of_many_ids_records_each,
    test_first_claim_creates_a_pending_item_owned_until_the_lease,
    test_is_revoked_names_the_marked_id,
    test_late_non_terminal_write_keeps_the_claim,
    test_live_claim_is_held_then_taken_over_once_its_lease_expired,
    test_marker_on_the_task_its_root_or_its_group_revokes_it,
    test_missing_table_is_a_store_error,
    test_more_than_a_transaction_holds_is_split_and_all_claimed,
    test_retry_releases_the_claim_so_the_next_attempt_runs_at_once,
    test_revoke_writes_markers_with_ttl,
    test_revoked_task_does_not_stop_the_rest_of_the_batch,
    test_shared_markers_are_checked_once_per_transaction,
    test_store_for_app_uses_the_results_table,
    test_task_id_twice_in_one_batch_is_claimed_once_and_held_once,
    test_terminal_task_is_never_claimed_again,
    test_terminal_write_releases_the_claim,
    transactions,
)
from tests.functional.store.test_large_results import (  # noqa: F401
    test_a_dropped_large_state_leaves_no_object,
    test_a_large_failure_round_trips_with_its_traceback,
    test_a_large_result_goes_to_s3_and_comes_back,
    test_a_small_result_after_a_large_one_drops_the_pointer,
)
from tests.functional.store.test_result_reads import (  # noqa: F401
    test_get_many_is_one_batch_get_per_hundred_ids,
    test_group_result_get_is_a_batch_read,
    test_group_results_and_chord_counters_still_use_plain_items,
    test_mget_keeps_order_and_gives_none_for_missing,
)
from tests.functional.store.test_results import (  # noqa: F401
    test_a_late_non_terminal_state_never_replaces_a_terminal_one,
    test_a_missing_table_is_a_store_error,
    test_a_state_is_one_update_without_a_read,
    test_a_terminal_state_replaces_a_non_terminal_one,
    test_attributes_are_written_and_queryable_by_every_index,
    test_retry_and_terminal_states_release_the_claim,
    test_revoked_never_rewrites_a_finished_task,
    test_revoked_replaces_a_pending_or_running_task,
    test_states_read_back_through_the_backend,
    test_the_deployed_table_has_the_template_indexes,
)
from tests.targets import pointed_at


@pytest.fixture(scope="module")
def cloud(cloud: Deployment, localstack_cloud: Deployment) -> Iterator[Deployment]:
    """The LocalStack target in place of the session's moto, for this module's tests."""
    with pointed_at(localstack_cloud, cloud):
        yield localstack_cloud


@pytest.fixture(scope="module")
def cloud_env(cloud: Deployment) -> dict[str, str]:
    """The environment of a subprocess that talks to the LocalStack target."""
    return {**os.environ, **cloud.environment}


def test_this_module_runs_on_dynamodb_local(cloud: Deployment, localstack: LocalStack) -> None:
    assert aws.client("dynamodb").meta.endpoint_url == localstack.dynamodb_url
    assert aws.client("s3").meta.endpoint_url == localstack.endpoint_url
