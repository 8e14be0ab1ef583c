# The two commands a fresh machine needs: `make demo` and `make test`. Both create/reuse .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.seqtune-installed
DEMO_DATA := seqtune/demo_data/paraphrase
DEMO_OUT ?= runs/demo
TORCH_VERSION ?= 2.13.0

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned to this machine's CPU wheel (pyproject.toml only asks torch>=2.4, which pip would otherwise
	# meet with a multi-GB CUDA build); -e keeps the checkout importable
	$(BIN)/python -m pip install -q "torch==$(TORCH_VERSION)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Fine-tune the embedded all-MiniLM-L6-v2 on the shipped paraphrase set, evaluate it, predict two pairs. Offline.
demo: $(STAMP)
	$(BIN)/seqtune train --dataset_name $(DEMO_DATA) --output_dir $(DEMO_OUT) --overwrite_output_dir
	$(BIN)/seqtune evaluate --model_name_or_path $(DEMO_OUT) --dataset_name $(DEMO_DATA)
	$(BIN)/seqtune predict --model_name_or_path $(DEMO_OUT) \
		--sentence1 "The mayor bought the boat in the harbour on Monday." \
		--sentence2 "On Monday morning, the mayor purchased the boat at the harbour."
	$(BIN)/seqtune predict --model_name_or_path $(DEMO_OUT) \
		--sentence1 "The mayor bought the boat in the harbour on Monday." \
		--sentence2 "On Monday morning, the mayor purchased the red bicycle at the harbour."

test: $(STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache
