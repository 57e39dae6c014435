"""deploy-local leaves out what CloudFormation does: resources and outputs whose Condition fails.

The optional worker service (WorkerService, off by default) is the template's case; the helpers
are checked on their own and on the real template's translation, without an endpoint.
"""

from __future__ import annotations

from typing import Any

import pytest

from devtools.cloud.deploy import _active, _parameters
from devtools.cloud.intrinsics import Scope
from devtools.cloud.template import load_template, translate
from infra.core.settings import Settings

SERVICE = {
    "WorkerCluster",
    "WorkerEcsService",
    "WorkerTaskDefinition",
    "WorkerTaskRole",
    "WorkerTaskExecutionRole",
    "WorkerLogGroup",
    "WorkerTaskSecurityGroup",
    "WorkerRunningTasksAlarm",
}


@pytest.fixture(scope="module")
def translated() -> dict[str, Any]:
    return translate(load_template())


def scope_of(template: dict[str, Any], **values: Any) -> Scope:
    parameters = _parameters(template, "stack", Settings.from_env({}))
    parameters.update(values)
    return Scope(parameters, conditions=template.get("Conditions", {}))


def test_active_keeps_unconditioned_and_true_and_drops_false() -> None:
    template = {
        "Parameters": {"On": {"Type": "String", "Default": "no"}},
        "Conditions": {"IsOn": {"Fn::Equals": [{"Ref": "On"}, "yes"]}},
    }
    section = {
        "Always": {"Type": "AWS::SQS::Queue"},
        "WhenOn": {"Type": "AWS::SQS::Queue", "Condition": "IsOn"},
    }

    assert set(_active(section, scope_of(template))) == {"Always"}
    assert set(_active(section, scope_of(template, On="yes"))) == {"Always", "WhenOn"}


def test_list_parameters_default_to_lists() -> None:
    template = {
        "Parameters": {
            "Subnets": {"Type": "CommaDelimitedList", "Default": ""},
            "Groups": {"Type": "List<AWS::EC2::SecurityGroup::Id>", "Default": "sg-1,sg-2"},
            "Name": {"Type": "String", "Default": "a,b"},
        }
    }

    parameters = _parameters(template, "stack", Settings.from_env({}))

    assert parameters["Subnets"] == [""]
    assert parameters["Groups"] == ["sg-1", "sg-2"]
    assert parameters["Name"] == "a,b"


def test_the_worker_service_is_left_out_by_default(translated: dict[str, Any]) -> None:
    resources = _active(translated["Resources"], scope_of(translated))
    outputs = _active(translated["Outputs"], scope_of(translated))

    assert not SERVICE & set(resources)
    assert {"LongQueue", "LongDeadLetterQueue", "WorkerFunction"} <= set(resources)
    assert not {"WorkerClusterName", "WorkerServiceName", "WorkerLogGroupName"} & set(outputs)


def test_the_worker_service_is_kept_when_turned_on(translated: dict[str, Any]) -> None:
    resources = _active(translated["Resources"], scope_of(translated, WorkerService="true"))

    assert set(resources) >= SERVICE
