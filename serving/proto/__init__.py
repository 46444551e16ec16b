"""Protocol of the gRPC gateway: `llmrec/v2/recommend.proto` and its generated Python stubs (checked in).

Regenerate after editing the .proto (from the repository root; grpcio-tools pinned in pyproject.toml):

    python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. \
        serving/proto/llmrec/v2/recommend.proto

The include root is the repository root, so the generated modules import each other as
`serving.proto.llmrec.v2` (the proto package stays `llmrec.v2`).
"""
