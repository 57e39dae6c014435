"""A results table of a test module's own, defined like the template's."""

from __future__ import annotations

from infra.core import aws
from infra.core.settings import Settings

__all__ = ["results_table_like_template"]


def results_table_like_template(name: str) -> str:
    """Create ``name`` with the session table's keys and indexes; its name.

    Exact counts need a table no other test writes to; and moto's TransactWriteItems deep-copies
    every table it touches (and puts the copy back when the transaction is cancelled): on the
    session's shared table, grown by every other test, each claim gets slower and the window in
    which a concurrent write is lost grows with it.
    """
    ddb = aws.client("dynamodb")
    template = ddb.describe_table(TableName=Settings.from_env().results_table)["Table"]
    ddb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=template["AttributeDefinitions"],
        KeySchema=template["KeySchema"],
        GlobalSecondaryIndexes=[
            {k: index[k] for k in ("IndexName", "KeySchema", "Projection")}
            for index in template.get("GlobalSecondaryIndexes", [])
        ],
    )
    return name
