"""The local evaluator of CloudFormation intrinsic functions."""

from __future__ import annotations

import pytest

from devtools.cloud.intrinsics import Scope, references, resolve
from infra.core.errors import ConfigurationError


@pytest.fixture
def scope() -> Scope:
    s = Scope(
        parameters={"AWS::StackName": "st", "Size": 3, "Env": "prod"},
        conditions={"IsProd": {"Fn::Equals": [{"Ref": "Env"}, "prod"]}},
    )
    s.refs["Queue"] = "http://q/1/st-celery"
    s.attributes[("Queue", "Arn")] = "arn:aws:sqs:us-east-1:1:st-celery"
    return s


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"Ref": "Queue"}, "http://q/1/st-celery"),
        ({"Fn::GetAtt": ["Queue", "Arn"]}, "arn:aws:sqs:us-east-1:1:st-celery"),
        ({"Fn::GetAtt": "Queue.Arn"}, "arn:aws:sqs:us-east-1:1:st-celery"),
        ({"Fn::Sub": "${AWS::StackName}-x-${Queue.Arn}"}, "st-x-arn:aws:sqs:us-east-1:1:st-celery"),
        ({"Fn::Sub": ["${A}/${Size}", {"A": {"Ref": "Env"}}]}, "prod/3"),
        ({"Fn::Sub": "keep ${!Literal}"}, "keep ${Literal}"),
        ({"Fn::Join": ["-", ["a", {"Ref": "Env"}]]}, "a-prod"),
        ({"Fn::Select": [1, {"Fn::Split": [",", "a,b,c"]}]}, "b"),
        ({"Fn::If": ["IsProd", "yes", "no"]}, "yes"),
        ({"Fn::ToJsonString": {"q": {"Ref": "Queue"}}}, '{"q":"http://q/1/st-celery"}'),
        ({"Nested": [{"Ref": "Size"}]}, {"Nested": [3]}),
    ],
)
def test_resolves(scope: Scope, value: object, expected: object) -> None:
    assert resolve(value, scope) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"Ref": "Missing"}, "neither a parameter nor a resource"),
        ({"Fn::GetAtt": ["Queue", "Nope"]}, "Queue.Nope is not known"),
        ({"Fn::ImportValue": "x"}, "Fn::ImportValue is not supported"),
        ({"Fn::If": ["Undefined", 1, 2]}, "condition 'Undefined' is not defined"),
    ],
)
def test_refuses_what_it_cannot_resolve(scope: Scope, value: object, reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason):
        resolve(value, scope)


def test_references_finds_dependencies() -> None:
    value = {
        "A": {"Ref": "Dlq"},
        "B": {"Fn::GetAtt": ["Table", "Arn"]},
        "C": {"Fn::Sub": "${Bucket.Arn}/* ${AWS::Region}"},
    }
    assert references(value) == {"Dlq", "Table", "Bucket", "AWS::Region"}
