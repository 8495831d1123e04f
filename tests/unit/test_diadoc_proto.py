"""The project's Diadoc .proto: its generated code is current, the pinned runtime runs it, and it reads
protobuf written with Diadoc's official schema (required fields, more fields) without losing a byte."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import fastjsonschema
import google.protobuf
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf import runtime_version as protobuf_runtime

from kontur_relay.domain.errors import MalformedPage
from kontur_relay.domain.model import Feed
from kontur_relay.feeds.diadoc import diadoc_events_pb2 as pb
from kontur_relay.feeds.diadoc.events import (
    MESSAGE_EVENT_TYPE,
    OTHER_EVENT_TYPE,
    PATCH_EVENT_TYPE,
    parse_page,
    read_event,
)
from kontur_relay.sinks.message import message as sink_message
from local_stack.template import ROOT

LAYER = ROOT / "layers" / "relay"
PROTO = "kontur_relay/feeds/diadoc/diadoc_events.proto"
GENERATED = LAYER / "kontur_relay" / "feeds" / "diadoc"
validate_message = fastjsonschema.compile(json.loads((ROOT / "schemas" / "message.schema.json").read_text()))


def _pin(requirements: Path, package: str) -> str:
    # A lock line: `name==version \` and its hashes on the lines after.
    match = re.search(rf"^{re.escape(package)}==([^\s\\;]+)", requirements.read_text(), re.MULTILINE)
    assert match, f"{package} is not pinned in {requirements}"
    return match.group(1)


def test_the_committed_generated_code_is_what_the_proto_generates(tmp_path):
    """What `make proto` writes, regenerated into a temporary directory: any drift fails here."""
    plugin = Path(sys.executable).parent / "protoc-gen-mypy"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{LAYER}",
            f"--python_out={tmp_path}",
            f"--plugin=protoc-gen-mypy={plugin}",
            f"--mypy_out={tmp_path}",
            str(LAYER / PROTO),
        ],
        check=True,
        capture_output=True,
    )
    for name in ("diadoc_events_pb2.py", "diadoc_events_pb2.pyi"):
        fresh = (tmp_path / "kontur_relay" / "feeds" / "diadoc" / name).read_text()
        assert fresh == (GENERATED / name).read_text(), f"{name} is stale: run `make proto`"


def test_the_pinned_runtime_accepts_the_code_grpcio_tools_generates():
    runtime = _pin(LAYER / "requirements.txt", "protobuf")
    assert google.protobuf.__version__ == runtime, "the tests run the protobuf the Lambda layer ships"
    assert _pin(ROOT / "requirements-dev.txt", "grpcio-tools") == "1.85.1"
    header = re.search(
        r"Protobuf Python Version: (\d+)\.(\d+)\.(\d+)", (GENERATED / "diadoc_events_pb2.py").read_text()
    )
    assert header
    major, minor, patch = (int(part) for part in header.groups())
    gencode = (major, minor, patch)
    assert gencode[0] == int(runtime.split(".")[0]), "a runtime of another major version refuses the code"
    assert gencode <= tuple(int(part) for part in runtime.split(".")), "the runtime must not be older"
    # The check the generated module runs on import, made explicitly: it raises on a mismatch.
    protobuf_runtime.ValidateProtobufRuntimeVersion(protobuf_runtime.Domain.PUBLIC, major, minor, patch, "", PROTO)


def test_every_field_is_optional_so_a_missing_one_never_fails_a_page():
    def fields(descriptor: Any) -> list[Any]:
        found = list(descriptor.fields)
        for nested in descriptor.nested_types:
            found += fields(nested)
        return found

    every = [f for message in pb.DESCRIPTOR.message_types_by_name.values() for f in fields(message)]
    assert every
    assert not [f.full_name for f in every if f.is_required]
    # An empty BoxEvent parses, and so does one with only an id.
    assert pb.BoxEvent.FromString(b"").EventId == ""
    assert read_event(pb.BoxEvent(EventId="e").SerializeToString(), "box").event.id == "e"


# -- Diadoc's own schema ---------------------------------------------------------------------------

#: A subset of Diadoc's official .proto files (diadocsdk), as Diadoc declares it: required fields,
#: its packages, and fields this project's schema leaves out. Bytes written with it must read alike.
OFFICIAL = {
    "Content.proto": """
        syntax = "proto2";
        package Diadoc.Api.Proto;
        message Content { optional sfixed32 Size = 1; optional bytes Data = 2; }
        enum TotalCountType { UnknownCountType = 0; Equal = 1; GreaterThanOrEqual = 2; }
        enum LockMode { Unknown = 0; None = 1; Send = 2; Full = 3; }
        enum DocumentDirection { UnknownDocumentDirection = 0; Inbound = 1; Outbound = 2; Internal = 3; }
    """,
    "Documents/Document.proto": """
        syntax = "proto2";
        import "Content.proto";
        package Diadoc.Api.Proto.Documents;
        enum MessageType { Unknown = 0; Letter = 1; Draft = 2; Template = 3; }
        enum RevocationStatus { UnknownRevocationStatus = 0; RevocationStatusNone = 1; }
        message Origin { required MessageType MessageType = 1; required string MessageId = 2; }
        message Document {
          optional string IndexKey = 1;
          required string MessageId = 2;
          required string EntityId = 3;
          required sfixed64 CreationTimestampTicks = 4;
          optional string CounteragentBoxId = 5;
          optional Diadoc.Api.Proto.Content Content = 9;
          optional string FileName = 10;
          optional string DocumentDate = 11;
          optional string DocumentNumber = 12;
          optional bool IsDeleted = 24 [default = false];
          optional string DepartmentId = 25;
          optional bool IsTest = 26 [default = false];
          optional string FromDepartmentId = 27;
          optional string ToDepartmentId = 28;
          optional string CustomDocumentId = 30;
          optional RevocationStatus RevocationStatus = 32 [default = UnknownRevocationStatus];
          optional sfixed64 SendTimestampTicks = 33;
          optional string PacketId = 45;
          optional Diadoc.Api.Proto.DocumentDirection DocumentDirection = 46 [default = UnknownDocumentDirection];
          optional sfixed64 LastModificationTimestampTicks = 47;
          optional bool IsRead = 51 [default = false];
          required string TypeNamedId = 63;
          required string Function = 64;
          required int32 WorkflowId = 65;
          required string Title = 66;
          optional Origin Origin = 72;
          required Diadoc.Api.Proto.LockMode LockMode = 74 [default = None];
          required string Version = 76;
        }
    """,
    "Events/DiadocMessage-GetApi.proto": """
        syntax = "proto2";
        import "Content.proto";
        import "Documents/Document.proto";
        package Diadoc.Api.Proto.Events;
        message BoxEventList {
          repeated BoxEvent Events = 1;
          optional int32 TotalCount = 2;
          required Diadoc.Api.Proto.TotalCountType TotalCountType = 3;
        }
        message BoxEvent {
          required string EventId = 1;
          optional Message Message = 2;
          optional MessagePatch Patch = 3;
          optional string IndexKey = 4;
        }
        message TemplateToLetterTransformationInfo { required string LetterId = 1; }
        message Message {
          required string MessageId = 1;
          required sfixed64 TimestampTicks = 2;
          required sfixed64 LastPatchTimestampTicks = 3;
          required string FromBoxId = 4;
          required string FromTitle = 5;
          optional string ToBoxId = 6;
          optional string ToTitle = 7;
          repeated Entity Entities = 8;
          optional bool IsDraft = 9 [default = false];
          optional bool DraftIsLocked = 10 [default = false];
          optional bool DraftIsRecycled = 11 [default = false];
          optional string CreatedFromDraftId = 12;
          repeated string DraftIsTransformedToMessageIdList = 13;
          optional bool IsDeleted = 14 [default = false];
          optional bool IsTest = 15 [default = false];
          optional bool IsInternal = 16 [default = false];
          optional bool IsProxified = 17 [default = false];
          optional string ProxyBoxId = 18;
          optional string ProxyTitle = 19;
          optional bool PacketIsLocked = 20 [default = false];
          required Diadoc.Api.Proto.LockMode LockMode = 21 [default = None];
          required Diadoc.Api.Proto.Documents.MessageType MessageType = 22;
          optional TemplateToLetterTransformationInfo TemplateToLetterTransformationInfo = 23;
          optional bool IsReusable = 24 [default = false];
        }
        message MessagePatch {
          required string MessageId = 1;
          required sfixed64 TimestampTicks = 2;
          repeated Entity Entities = 3;
          optional bool ForDraft = 4 [default = false];
          optional bool DraftIsRecycled = 5 [default = false];
          repeated string DraftIsTransformedToMessageIdList = 6;
          optional bool DraftIsLocked = 7 [default = false];
          optional bool MessageIsDeleted = 8 [default = false];
          repeated EntityPatch EntityPatches = 9;
          optional bool MessageIsRestored = 10 [default = false];
          optional bool MessageIsDelivered = 11 [default = false];
          optional string DeliveredPatchId = 12;
          required string PatchId = 13;
          optional string NotDeliveredEventId = 14;
          required Diadoc.Api.Proto.Documents.MessageType MessageType = 15;
        }
        message Entity {
          optional EntityType EntityType = 1 [default = UnknownEntityType];
          required string EntityId = 2;
          optional string ParentEntityId = 3;
          optional Diadoc.Api.Proto.Content Content = 4;
          optional AttachmentType AttachmentType = 5 [default = UnknownAttachmentType];
          optional string FileName = 6;
          optional bool NeedRecipientSignature = 7 [default = false];
          optional string SignerBoxId = 8;
          optional string NotDeliveredEventId = 10;
          optional Diadoc.Api.Proto.Documents.Document DocumentInfo = 11;
          optional sfixed64 RawCreationDate = 12 [default = 0];
          optional string SignerDepartmentId = 14;
          optional bool NeedReceipt = 17 [default = false];
          optional string PacketId = 18;
          optional bool IsApprovementSignature = 19 [default = false];
          optional bool IsEncryptedContent = 20 [default = false];
          repeated string Labels = 25;
          optional string Version = 26;
          optional string ContentTypeId = 31;
          optional string AuthorUserId = 33;
        }
        message EntityPatch {
          required string EntityId = 1;
          optional bool DocumentIsDeleted = 2 [default = false];
          optional string MovedToDepartment = 3;
          optional bool DocumentIsRestored = 4 [default = false];
          optional bool ContentIsPatched = 5 [default = false];
          optional string ForwardedToBoxId = 6;
        }
        enum EntityType { UnknownEntityType = 0; Attachment = 1; Signature = 2; }
        enum AttachmentType {
          UnknownAttachmentType = -1; Nonformalized = 0; Invoice = 1; UniversalTransferDocument = 41;
          UniversalMessage = 79; Fourteenth2026 = 90;
        }
    """,
}


@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Diadoc's message classes, compiled from OFFICIAL into a pool of their own."""
    root = tmp_path_factory.mktemp("official")
    for name, text in OFFICIAL.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    descriptors = root / "official.pb"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{root}",
            "--include_imports",
            f"--descriptor_set_out={descriptors}",
            *OFFICIAL,
        ],
        check=True,
        capture_output=True,
        cwd=root,
    )
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(descriptors.read_bytes()).file:
        pool.Add(file)
    return {
        name.rsplit(".", 1)[1]: message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
        for name in (
            "Diadoc.Api.Proto.Events.BoxEventList",
            "Diadoc.Api.Proto.Events.BoxEvent",
            "Diadoc.Api.Proto.Events.TemplateToLetterTransformationInfo",
        )
    }


def _official_page(official: dict[str, Any]) -> Any:
    document = {
        "IndexKey": "doc+key/1=",
        "MessageId": "m-1",
        "EntityId": "e-1",
        "CreationTimestampTicks": 638_500_000_001_234_567,
        "CounteragentBoxId": "counterparty@diadoc.ru",
        "FileName": "УПД.xml",
        "DepartmentId": "d-1",
        "RevocationStatus": "RevocationStatusNone",
        "SendTimestampTicks": 638_500_000_001_234_567,
        "DocumentDirection": "Inbound",
        "LastModificationTimestampTicks": 638_500_000_001_234_567,
        "IsRead": True,
        "TypeNamedId": "UniversalTransferDocument",
        "Function": "СЧФДОП",
        "WorkflowId": 7,
        "Title": "УПД № 12",
        "Origin": {"MessageType": "Letter", "MessageId": "m-0"},
        "LockMode": "Send",
        "Version": "utd820_05_01_01",
    }
    message = official["BoxEvent"](
        EventId="ev-1",
        IndexKey="idx+1/2==",
        Message={
            "MessageId": "m-1",
            "TimestampTicks": 638_500_000_001_234_567,
            "LastPatchTimestampTicks": 638_500_000_001_234_567,
            "FromBoxId": "counterparty@diadoc.ru",
            "FromTitle": "ООО «Ромашка»",  # noqa: RUF001 - Cyrillic on purpose
            "ToBoxId": "box@diadoc.ru",
            "Entities": [
                {
                    "EntityType": "Attachment",
                    "EntityId": "e-1",
                    "AttachmentType": "UniversalTransferDocument",
                    "Content": {"Size": 4096},
                    "DocumentInfo": document,
                    "RawCreationDate": 638_500_000_001_234_567,
                    "IsEncryptedContent": False,
                    "Labels": ["urgent"],
                },
                {"EntityType": "Attachment", "EntityId": "e-2", "AttachmentType": "Fourteenth2026"},
            ],
            "LockMode": "None",
            "MessageType": "Letter",
            "TemplateToLetterTransformationInfo": {"LetterId": "letter-1"},
        },
    )
    patch = official["BoxEvent"](
        EventId="ev-2",
        IndexKey="idx+2/3==",
        Patch={
            "MessageId": "m-1",
            "TimestampTicks": 638_500_000_009_999_999,
            "PatchId": "p-1",
            "MessageType": "Letter",
            "EntityPatches": [{"EntityId": "e-1", "MovedToDepartment": "d-2"}],
        },
    )
    return official["BoxEventList"](Events=[message, patch], TotalCount=2, TotalCountType="Equal")


def test_protobuf_from_diadocs_own_schema_reads_alike_and_loses_nothing(official):
    page = _official_page(official)
    frame = parse_page(page.SerializeToString())

    assert (frame.TotalCount, frame.TotalCountType) == (2, pb.Equal)
    read = [read_event(raw, "box@diadoc.ru") for raw in frame.Events]
    message, patch = (item.event for item in read)
    assert [item.index_key for item in read] == ["idx+1/2==", "idx+2/3=="]

    # Every field both schemas know has the same name, number and type: the JSON agrees on them.
    theirs = json_format.MessageToDict(page.Events[0], preserving_proto_field_name=True)
    ours = message.data
    theirs_document = theirs["Message"]["Entities"][0]["DocumentInfo"]
    unknown_to_us = {"RevocationStatus", "SendTimestampTicks", "IsRead", "Origin", "LockMode"}
    assert ours["Message"]["Entities"][0]["DocumentInfo"] == {
        name: value for name, value in theirs_document.items() if name not in unknown_to_us
    }
    assert ours["Message"]["LockMode"] == theirs["Message"]["LockMode"] == "None"
    assert ours["Message"]["TimestampTicks"] == "638500000001234567"
    assert "TemplateToLetterTransformationInfo" not in ours["Message"]
    assert "AttachmentType" not in ours["Message"]["Entities"][1], "90 is unknown to this schema"
    assert patch.data["Patch"]["EntityPatches"] == [{"EntityId": "e-1", "MovedToDepartment": "d-2"}]

    # The published bytes are Diadoc's, so a consumer with Diadoc's schema reads everything back.
    for item, original in zip(read, page.Events, strict=True):
        raw = base64.b64decode(item.event.extensions["protobuf"])
        assert raw == original.SerializeToString()
        assert official["BoxEvent"].FromString(raw) == original

    assert (message.type, patch.type) == (MESSAGE_EVENT_TYPE, PATCH_EVENT_TYPE)
    assert message.time == "2024-04-29T15:06:40.1234567Z"
    assert patch.time == "2024-04-29T15:06:40.9999999Z"
    assert message.attributes == {
        "box_id": "box@diadoc.ru",
        "message_type": "Letter",
        "document_direction": "Inbound",
        "type_named_id": "UniversalTransferDocument",
        "counteragent_box_id": "counterparty@diadoc.ru",
        "department_id": "d-1",
    }
    assert patch.attributes["department_id"] == "d-2"
    assert (message.subject, message.ordering_key) == ("m-1", "m-1")


def test_a_box_event_of_a_newer_kind_is_published_whole_not_stopped_at():
    """Neither Message nor Patch: a kind of event this schema has not met. It goes out with its bytes."""
    raw = pb.BoxEvent(EventId="ev-9", IndexKey="k+9/=").SerializeToString() + b"\x2a\x03new"  # field 5
    read = read_event(raw, "box@diadoc.ru")
    message = json.loads(
        sink_message(
            Feed(id="diadoc:box@diadoc.ru", kind="diadoc", source_uri="https://diadoc/boxes/box"), read.event
        ).body
    )

    validate_message(message)
    assert message["type"] == OTHER_EVENT_TYPE
    assert message["data"] == {"EventId": "ev-9", "IndexKey": "k+9/="}
    assert base64.b64decode(message["protobuf"]) == raw
    assert "subject" not in message
    assert "time" not in message
    assert read.index_key == "k+9/="


def test_a_message_without_event_id_is_a_malformed_page():
    with pytest.raises(MalformedPage, match="without EventId"):
        read_event(pb.BoxEvent(IndexKey="k").SerializeToString(), "box")
    with pytest.raises(MalformedPage, match="not a BoxEventList"):
        parse_page(b"\x0a\xff")
