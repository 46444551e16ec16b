"""The serving side: Triton process, item index, gRPC gateway (never imports torch, nor anything from train/)."""
