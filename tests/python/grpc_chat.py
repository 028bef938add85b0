"""A gRPC client not written in Rust: Python's grpcio against `nagare serve`'s gRPC facade.

Compiles proto/nagare/v1/*.proto with grpcio-tools into a temporary directory, then streams a
chat, makes a unary call and a call without a token, and streams another chat knowing nothing but
what server reflection tells it. Prints one JSON object per line for the Rust test
(tests/tests/grpc_python.rs) to check.

Usage: grpc_chat.py HOST:PORT TOKEN PROTO_ROOT
"""

import importlib
import json
import sys
import tempfile

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_tools import protoc


def compile_protos(proto_root, out_dir):
    files = ["nagare/v1/chat.proto", "nagare/v1/conversations.proto"]
    status = protoc.main(
        ["grpc_tools.protoc", f"-I{proto_root}", f"--python_out={out_dir}",
         f"--grpc_python_out={out_dir}", *files]
    )
    if status != 0:
        raise SystemExit(f"protoc failed with {status}")
    sys.path.insert(0, out_dir)
    return (importlib.import_module("nagare.v1.chat_pb2"),
            importlib.import_module("nagare.v1.chat_pb2_grpc"))


def emit(**fields):
    print(json.dumps(fields), flush=True)


def call_through_reflection(channel, auth):
    """What grpcurl does: learn the services and messages from the server, then stream a chat."""
    database = ProtoReflectionDescriptorDatabase(channel)
    services = sorted(database.get_services())
    pool = DescriptorPool(database)
    method = pool.FindServiceByName("nagare.v1.ChatService").methods_by_name["ConverseStream"]
    request_type = message_factory.GetMessageClass(method.input_type)
    event_type = message_factory.GetMessageClass(method.output_type)
    converse_stream = channel.unary_stream(
        "/nagare.v1.ChatService/ConverseStream",
        request_serializer=request_type.SerializeToString,
        response_deserializer=event_type.FromString,
    )
    text = ""
    for event in converse_stream(request_type(message="via reflection"), metadata=auth, timeout=30):
        if event.WhichOneof("event") == "delta":
            text += event.delta.text
    emit(type="reflected", services=services, text=text)


def main():
    target, token, proto_root = sys.argv[1:4]
    with tempfile.TemporaryDirectory() as out_dir:
        pb, services = compile_protos(proto_root, out_dir)
        with grpc.insecure_channel(target) as channel:
            chat = services.ChatServiceStub(channel)
            auth = [("authorization", f"Bearer {token}")]
            request = pb.ChatRequest(message="hello from python", request_id="py-1")
            for event in chat.ConverseStream(request, metadata=auth, timeout=30):
                kind = event.WhichOneof("event")
                body = getattr(event, kind)
                if kind == "start":
                    emit(type="start", request_id=body.request_id, model=body.model)
                elif kind == "delta":
                    emit(type="delta", request_id=body.request_id, text=body.text)
                else:
                    emit(type="done", request_id=body.request_id,
                         stop_reason=body.stop_reason,
                         output_tokens=body.usage.output_tokens)
            reply = chat.Converse(pb.ChatRequest(message="hello from python"),
                                  metadata=auth, timeout=30)
            emit(type="reply", content=reply.message.content, model=reply.model)
            try:
                chat.Converse(pb.ChatRequest(message="no token"), timeout=30)
                emit(type="refused", code="OK")
            except grpc.RpcError as e:
                trailers = dict(e.trailing_metadata() or ())
                emit(type="refused", code=e.code().name,
                     error_code=trailers.get("nagare-error-code"))
            call_through_reflection(channel, auth)


if __name__ == "__main__":
    main()
